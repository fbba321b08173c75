"""sherpa-onnx's side of an export: its feature options, and recognizers over an export.

sherpa-onnx computes fbank features itself with kaldi-native-fbank. Its Python
``FeatureExtractorConfig`` sets the sample rate, the number of mel bins, ``low_freq``,
``high_freq``, ``dither``, ``snip_edges`` and ``normalize_samples`` (samples in [-1, 1], or
scaled by 32768); everything else is kaldi-native-fbank's default: 25 ms povey windows
every 10 ms, pre-emphasis 0.97, DC offset removed, FFT rounded to a power of two, log mel
power without energy. :func:`sherpa_feature_config` maps a model's
:class:`~speechfm.features.fbank.FbankConfig` onto those options, or says which setting
sherpa-onnx cannot reproduce.

:func:`create_recognizer` builds the sherpa-onnx recognizer an export directory (the
``export.json`` that :func:`speechfm.export.export_onnx` writes) describes, with those
feature options; :func:`recognize` decodes one utterance with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from speechfm.errors import SpeechfmError

__all__ = [
    "EXPORT_JSON",
    "ExportError",
    "create_recognizer",
    "read_export",
    "recognize",
    "sherpa_feature_config",
    "tail_padding_s",
]

EXPORT_JSON = "export.json"
"""The description of an export directory (what :func:`export_onnx` returns)."""

# kaldi-native-fbank defaults that sherpa-onnx's Python feature config cannot change.
_FIXED = {
    "frame_length_ms": 25.0,
    "frame_shift_ms": 10.0,
    "preemph_coeff": 0.97,
    "remove_dc_offset": True,
    "window_type": "povey",
    "round_to_power_of_two": True,
    "use_energy": False,
    "use_power": True,
    "use_log_fbank": True,
}


class ExportError(SpeechfmError, ValueError):
    """A model cannot be exported as asked; the message says why and what would work."""


def sherpa_feature_config(fbank: Any) -> dict[str, Any]:
    """The keyword arguments of ``sherpa_onnx.FeatureExtractorConfig`` that compute the
    same features as ``fbank`` (a :class:`~speechfm.features.fbank.FbankConfig`).

    Raises:
        ExportError: naming every setting sherpa-onnx cannot reproduce.
    """
    problems = [f"{name}={getattr(fbank, name)!r} (sherpa-onnx computes {want!r})"
                for name, want in _FIXED.items() if getattr(fbank, name) != want]
    if fbank.waveform_scale not in (1.0, 32768.0):
        problems.append(f"waveform_scale={fbank.waveform_scale!r} (sherpa-onnx takes samples "
                        "in [-1, 1] or scales them by 32768)")
    if problems:
        raise ExportError("sherpa-onnx cannot compute this model's fbank features: "
                          + "; ".join(problems) + ". Export a model trained with "
                          "kaldi-native-fbank's defaults for these settings")
    return {
        "sampling_rate": int(fbank.sample_rate),
        "feature_dim": int(fbank.num_mel_bins),
        "low_freq": float(fbank.low_freq),
        "high_freq": float(fbank.high_freq),
        "dither": float(fbank.dither),
        "normalize_samples": fbank.waveform_scale == 1.0,
        "snip_edges": bool(fbank.snip_edges),
    }


def read_export(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``export.json`` of an export directory.

    Raises:
        ExportError: there is none.
    """
    path = Path(export_dir) / EXPORT_JSON
    if not path.is_file():
        raise ExportError(f"{export_dir}: no {EXPORT_JSON}; not a `speechfm export` directory")
    return json.loads(path.read_text(encoding="utf-8"))


def create_recognizer(export_dir: str | os.PathLike, *, int8: bool = False,
                      num_threads: int = 1, decoding_method: str = "greedy_search",
                      provider: str = "cpu", debug: bool = False) -> Any:
    """A sherpa-onnx recognizer over an export directory, with the model's feature options.

    Args:
        export_dir: written by :func:`speechfm.export.export_onnx`.
        int8: use the int8 files (exported with ``int8=True``).
        num_threads: onnxruntime threads.
        decoding_method: ``"greedy_search"`` or ``"modified_beam_search"`` (transducers),
            ``"greedy_search"`` or ``"prefix_beam_search"`` (CTC).
        provider: onnxruntime execution provider (``"cpu"``, ``"cuda"``, ...).

    Returns:
        ``sherpa_onnx.OnlineRecognizer`` (streaming transducer) or
        ``sherpa_onnx.OfflineRecognizer`` (CTC, offline transducer).
    """
    import sherpa_onnx
    from sherpa_onnx.lib import _sherpa_onnx as lib

    export_dir = Path(export_dir)
    info = read_export(export_dir)
    key = "int8_files" if int8 else "files"
    if key not in info:
        raise ExportError(f"{export_dir}: exported without int8 files (export with --int8)")
    files = {name: str(export_dir / f) for name, f in info[key].items()}
    tokens = str(export_dir / info["files"]["tokens"])
    feats = info["feature_config"]
    if info["kind"] == "online_transducer":
        return sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=tokens, encoder=files["encoder"], decoder=files["decoder"],
            joiner=files["joiner"], num_threads=num_threads,
            sample_rate=feats["sampling_rate"], feature_dim=feats["feature_dim"],
            low_freq=feats["low_freq"], high_freq=feats["high_freq"], dither=feats["dither"],
            normalize_samples=feats["normalize_samples"], snip_edges=feats["snip_edges"],
            decoding_method=decoding_method, model_type=info["sherpa_model_type"],
            provider=provider, debug=debug)
    if info["kind"] == "offline_ctc":
        model = lib.OfflineModelConfig(
            zipformer_ctc=lib.OfflineZipformerCtcModelConfig(model=files["model"]),
            tokens=tokens, num_threads=num_threads, provider=provider, debug=debug)
    elif info["kind"] == "offline_transducer":
        model = lib.OfflineModelConfig(
            transducer=lib.OfflineTransducerModelConfig(
                encoder_filename=files["encoder"], decoder_filename=files["decoder"],
                joiner_filename=files["joiner"]),
            tokens=tokens, num_threads=num_threads, provider=provider, debug=debug,
            model_type="transducer")
    else:
        raise ExportError(f"{export_dir}: unknown export kind {info['kind']!r}")
    config = lib.OfflineRecognizerConfig(
        feat_config=lib.FeatureExtractorConfig(**feats), model_config=model,
        decoding_method=decoding_method)
    # OfflineRecognizer's own from_* constructors fix low_freq/high_freq/snip_edges, so the
    # wrapper is assembled around the full config the way they assemble theirs.
    recognizer = sherpa_onnx.OfflineRecognizer.__new__(sherpa_onnx.OfflineRecognizer)
    recognizer.recognizer = lib.OfflineRecognizer(config)
    recognizer.config = config
    return recognizer


def tail_padding_s(export_dir: str | os.PathLike) -> float:
    """Seconds of silence to append to a stream's audio so that a streaming recognizer
    decodes all of it (it runs a chunk only once ``T`` frames past its start exist), or 0
    for an offline export."""
    info = read_export(export_dir)
    meta = info.get("encoder_metadata", {})
    if info["kind"] != "online_transducer":
        return 0.0
    frames = int(meta["T"]) + int(meta["decode_chunk_len"])
    return frames * info["frame_shift_s"]


def recognize(recognizer: Any, audio: np.ndarray, sample_rate: int, *,
              piece_s: float = 0.1, tail_s: float = 0.0) -> str:
    """Decode one utterance with a recognizer from :func:`create_recognizer`.

    Args:
        audio: float32 (S,) samples in [-1, 1].
        piece_s: an online recognizer is fed pieces of this many seconds, decoding every
            ready chunk after each (as live audio would arrive).
        tail_s: seconds of silence appended (online recognizers: :func:`tail_padding_s`).

    Returns:
        The text.
    """
    import sherpa_onnx

    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if tail_s > 0:
        audio = np.concatenate([audio, np.zeros(int(round(tail_s * sample_rate)), np.float32)])
    stream = recognizer.create_stream()
    if isinstance(recognizer, sherpa_onnx.OnlineRecognizer):
        step = max(1, int(piece_s * sample_rate))
        for start in range(0, audio.shape[0], step):
            stream.accept_waveform(sample_rate, audio[start : start + step])
            while recognizer.is_ready(stream):
                recognizer.decode_stream(stream)
        stream.input_finished()
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        return recognizer.get_result(stream)
    stream.accept_waveform(sample_rate, audio)
    recognizer.decode_stream(stream)
    return stream.result.text
