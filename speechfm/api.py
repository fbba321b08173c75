"""The Python inference API: load a checkpoint directory, transcribe audio, embed it.

::

    import speechfm

    model = speechfm.load("exp/ctc_small/best")            # config.json + weights + tokenizer
    model.transcribe("a.wav")                               # -> "hello world"
    model.transcribe(["a.wav", "b.mp3", (samples, 8000)])   # -> ["...", "...", "..."]
    model.transcribe(samples, sample_rate=44100, timestamps=True)   # -> Transcript
    model.embed("a.wav", layers=(6, -1))                    # -> [(T', C), (T', C)]

    stream = speechfm.load("exp/transducer/final").stream()  # transducers: live audio
    for piece, rate in microphone():                         # pieces of any size and rate
        partial = stream.accept_waveform(piece, rate)       # -> text so far
    stream.finalize()                                        # -> the final text

A model directory holds ``config.json`` (``{"family": ..., "model": <model config dict>,
"tokenizer": "tokenizer", "frame_shift_s": ..., "speechfm_version": ...}``),
``model.safetensors`` (weights, CMVN statistics included) and the tokenizer directory;
nothing else is needed, and nothing is unpickled. The ``"family"`` key picks the loader
in :data:`_LOADERS`, a plain dict (one entry per model family).

Audio can be a file path (anything soundfile decodes: wav, flac, ogg, mp3, ... at any
rate), a 1-D or 2-D (channels) numpy array or torch tensor together with its sample
rate, a ``(samples, sample_rate)`` tuple, or a list of these. Everything is mixed to mono
and resampled (soxr) to the model's rate; a list is decoded in batches of similar
length and the results come back in input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechfm.decode.ctc import (
    CtcHypothesis,
    WordTimestamp,
    ctc_greedy_hypotheses,
    ctc_prefix_beam_search,
    word_timestamps,
)
from speechfm.errors import AudioError, DataError, SpeechfmError

__all__ = ["METHODS", "AudioStream", "SpeechModel", "Transcript", "WordTimestamp", "load"]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
METHODS = ("greedy", "beam")
"""Search methods :meth:`SpeechModel.transcribe` accepts."""
DEFAULT_STREAM_CHUNK = 16
"""Encoder frames per chunk of :meth:`SpeechModel.stream` for a full-context encoder
(0.64 s at a 40 ms frame shift)."""

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | tuple
"""One audio input: a path, an array/tensor (with ``sample_rate=``), or ``(array, rate)``."""

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}

# (module, feats (N, T, F), feat_lens (N,), method, beam) -> N hypotheses
SearchFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, str, int], list[CtcHypothesis]]


@dataclass
class Transcript:
    """A transcription with word timings and confidences."""

    text: str
    """The decoded text."""
    words: list[WordTimestamp] = field(default_factory=list)
    """Words with start/end times in seconds (clipped to the audio) and confidences in [0, 1]."""
    tokens: list[str] = field(default_factory=list)
    """The decoded tokens (tokenizer pieces)."""
    token_confidences: list[float] = field(default_factory=list)
    """Per-token confidence in [0, 1] (mean posterior over the token's frames)."""
    token_times: list[tuple[float, float]] = field(default_factory=list)
    """Per-token (start, end) in seconds on the best alignment."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (what ``speechfm transcribe --json`` prints)."""
        return {
            "text": self.text,
            "words": [
                {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
                for w in self.words
            ],
            "tokens": list(self.tokens),
            "token_confidences": list(self.token_confidences),
            "token_times": [list(t) for t in self.token_times],
        }


# ------------------------------------------------------------------------- families


def _ctc_search(
    module: nn.Module, feats: torch.Tensor, feat_lens: torch.Tensor, method: str, beam: int
) -> list[CtcHypothesis]:
    log_probs, out_lens = module(feats, feat_lens)
    if method == "greedy":
        return ctc_greedy_hypotheses(log_probs, out_lens, blank=module.blank_id)
    nbest = ctc_prefix_beam_search(log_probs, out_lens, beam=beam, nbest=1, blank=module.blank_id)
    return [hyps[0] if hyps else CtcHypothesis(tokens=[]) for hyps in nbest]


def _build_ctc(model_config: dict[str, Any], where: Path) -> tuple[nn.Module, SearchFn]:
    from speechfm.models.ctc import CtcModelConfig, create_ctc_model

    try:
        config = CtcModelConfig.from_dict(model_config)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{where}: invalid CTC model config: {e}") from e
    return create_ctc_model(config), _ctc_search


def _as_ctc_hypothesis(hyp) -> CtcHypothesis:
    """A transducer hypothesis in the CTC hypothesis' shape (each token on one frame)."""
    probs = getattr(hyp, "token_log_probs", None) or []
    return CtcHypothesis(
        tokens=list(hyp.tokens),
        token_frames=list(hyp.frames),
        token_end_frames=list(hyp.frames),
        token_confidences=[float(np.exp(p)) for p in probs],
        score=float(hyp.score),
    )


def _transducer_search(
    module: nn.Module, feats: torch.Tensor, feat_lens: torch.Tensor, method: str, beam: int
) -> list[CtcHypothesis]:
    from speechfm.decode.transducer import greedy_search, modified_beam_search

    enc, enc_lens = module(feats, feat_lens)
    if method == "greedy":
        hyps = greedy_search(module, enc, enc_lens)
    else:
        hyps = [n[0] for n in modified_beam_search(module, enc, enc_lens, beam=beam)]
    return [_as_ctc_hypothesis(h) for h in hyps]


def _build_transducer(model_config: dict[str, Any], where: Path) -> tuple[nn.Module, SearchFn]:
    from speechfm.models.transducer import TransducerModelConfig, create_transducer_model

    try:
        config = TransducerModelConfig.from_dict(model_config)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{where}: invalid transducer model config: {e}") from e
    return create_transducer_model(config), _transducer_search


_LOADERS: dict[str, Callable[[dict[str, Any], Path], tuple[nn.Module, SearchFn]]] = {
    "ctc": _build_ctc,
    "transducer": _build_transducer,
}
"""Model family (config.json's ``"family"``) -> builder of (module, search function).

A module must offer ``feature_extractor()`` (waveforms -> features), ``sample_rate``,
``frame_shift_s``, ``encode(feats, feat_lens, return_layers=...)`` and whatever its search
function calls."""


# --------------------------------------------------------------------------- loading


def _resolve_dir(path: Path) -> Path:
    """``path`` itself, or the checkpoint ``path/latest`` names (a training run's root)."""
    if not path.exists():
        raise DataError(f"{path}: model directory does not exist")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory (expected a model directory with {CONFIG_FILE})")
    if not (path / CONFIG_FILE).is_file() and (path / "latest").is_file():
        name = (path / "latest").read_text(encoding="utf-8").strip()
        if name and (path / name / CONFIG_FILE).is_file():
            return path / name
    return path


def _read_config(directory: Path) -> dict[str, Any]:
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise DataError(f"{directory}: not a model directory ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise DataError(f"{file}: expected a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("model"), dict):
        raise DataError(f'{file}: no "model" section (the model config) in it')
    return config


def _family(config: dict[str, Any], file: Path) -> str:
    family = config.get("family", config["model"].get("family"))
    if family is None:
        raise DataError(f'{file}: no "family" key saying which kind of model this is')
    if family not in _LOADERS:
        raise DataError(
            f"{file}: unknown model family {family!r} (this speechfm loads: "
            f"{', '.join(sorted(_LOADERS))})"
        )
    return family


def _list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _load_weights(module: nn.Module, file: Path) -> None:
    """Load ``file`` into ``module``, naming every missing, unexpected or mis-shaped key."""
    from safetensors.torch import load_file

    if not file.is_file():
        raise DataError(f"{file.parent}: no model weights ({file.name} is missing)")
    try:
        state = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"{file}: cannot read the weights ({e})") from e
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {_list(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_list(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches (file vs config): {_list(shapes)}")
        raise DataError(
            f"{file}: weights do not match the model config.json describes; " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)


def _load_tokenizer(directory: Path, config: dict[str, Any]):
    from speechfm.text.base import load_tokenizer

    name = config.get("tokenizer", TOKENIZER_DIR)
    if not isinstance(name, str) or not name:
        raise DataError(f'{directory / CONFIG_FILE}: "tokenizer" must be a directory name')
    tok_dir = directory / name
    if not tok_dir.is_dir():
        raise DataError(f"{directory}: no tokenizer ({name}/ directory is missing)")
    return load_tokenizer(tok_dir)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.")
    if key not in _DTYPES:
        raise SpeechfmError(f"unknown dtype {dtype!r} (use one of {', '.join(_DTYPES)})")
    return _DTYPES[key]


def _resolve_device(device: torch.device | str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise SpeechfmError(f"invalid device {device!r} ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpeechfmError(f"device {device!r} requested but CUDA is not available here")
    return dev


def load(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
) -> SpeechModel:
    """Rebuild a model, its tokenizer and its feature settings from a model directory.

    Args:
        path: a model directory (``config.json``, ``model.safetensors``, ``tokenizer/``),
            or a training run's checkpoint root whose ``latest`` file names one.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        dtype: cast the weights to this dtype (``torch.bfloat16``, ``"fp16"``, ...);
            None keeps them as saved (float32). Features are computed in float32 and
            cast; log-posteriors are float32 whatever the dtype.

    Returns:
        A :class:`SpeechModel` in eval mode.

    Raises:
        DataError: the directory is incomplete or inconsistent; the message names the
            directory and what is missing (config.json, model.safetensors, the tokenizer,
            a known family, matching weights: missing/unexpected keys are listed).
    """
    directory = _resolve_dir(Path(path))
    config = _read_config(directory)
    family = _family(config, directory / CONFIG_FILE)
    module, search = _LOADERS[family](config["model"], directory / CONFIG_FILE)
    _load_weights(module, directory / MODEL_FILE)
    tokenizer = _load_tokenizer(directory, config)
    vocab = getattr(module, "vocab_size", None)
    if vocab is not None and vocab != tokenizer.vocab_size:
        raise DataError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"outputs {vocab}"
        )
    model = SpeechModel(
        module, tokenizer, search=search, family=family, config=config, path=directory
    )
    return model.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------ audio


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _is_single(audio: Any) -> bool:
    """One input (path, array, (array, rate)) rather than a list of inputs."""
    if isinstance(audio, (str, os.PathLike)) or _is_array(audio):
        return True
    return (
        isinstance(audio, tuple)
        and len(audio) == 2
        and _is_array(audio[0])
        and isinstance(audio[1], (int, np.integer))
    )


def _array_name(i: int, x: Any) -> str:
    kind = "torch tensor" if isinstance(x, torch.Tensor) else "numpy array"
    return f"audio input #{i} ({kind} of shape {tuple(x.shape)})"


def _to_float_mono(x: Any, name: str) -> np.ndarray:
    """(S,), (C, S) or (S, C) array/tensor of floats or PCM integers -> float (S,)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        # PCM integers (e.g. int16 from a WAV reader): full scale maps to [-1, 1).
        bits = 8 * x.dtype.itemsize
        offset = 2.0 ** (bits - 1) if x.dtype.kind == "u" else 0.0
        x = (x.astype(np.float64) - offset) / 2.0 ** (bits - 1)
    elif x.dtype.kind != "f":
        raise AudioError(f"{name}: samples must be floats or PCM integers, got dtype {x.dtype}")
    if x.ndim == 2:
        # Channels are the short axis: (C, S) as lhotse/torch keep it, (S, C) as soundfile.
        x = x.mean(axis=0 if x.shape[0] <= x.shape[1] else 1)
    elif x.ndim != 1:
        raise AudioError(f"{name}: expected 1-D samples or 2-D (channels, samples), got {x.ndim}-D")
    if x.size == 0:
        raise AudioError(f"{name}: audio is empty (no samples)")
    finite = np.isfinite(x)
    if not finite.all():
        raise AudioError(f"{name}: audio has {int(x.size - finite.sum())} NaN/Inf sample(s)")
    return x


def _load_one(item: Any, i: int, sample_rate: int | None, target_sr: int) -> np.ndarray:
    """One input -> float32 mono (S,) at ``target_sr``; errors name the input."""
    from speechfm.data.audio import read_audio, to_mono_resampled

    if isinstance(item, (str, os.PathLike)):
        # read_audio's errors name the file and the problem (missing, undecodable, empty).
        return read_audio(item, target_sr)
    rate = sample_rate
    if isinstance(item, tuple) and len(item) == 2 and _is_array(item[0]):
        item, rate = item
    if not _is_array(item):
        raise AudioError(
            f"audio input #{i}: expected a file path, a numpy array or torch tensor, or "
            f"(samples, sample_rate), got {type(item).__name__}"
        )
    name = _array_name(i, item)
    if rate is None:
        raise AudioError(
            f"{name}: no sample rate; pass sample_rate=... (Hz) or (samples, sample_rate)"
        )
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer (Hz), got {rate!r}")
    x = _to_float_mono(item, name)
    return to_mono_resampled(x, int(rate), target_sr)


# ------------------------------------------------------------------------------ model


class SpeechModel:
    """A loaded model with its tokenizer: ``transcribe`` and ``embed`` raw audio.

    Build it with :func:`load`. Attributes: ``module`` (the ``nn.Module``, eval mode),
    ``tokenizer``, ``family``, ``config`` (config.json as a dict), ``path``.
    """

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Any,
        *,
        search: SearchFn,
        family: str,
        config: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.family = family
        self.config = dict(config or {})
        self.path = path
        self._search = search

    def __repr__(self) -> str:
        return (
            f"SpeechModel(family={self.family!r}, path={str(self.path)!r}, "
            f"device={str(self.device)!r}, vocab_size={self.tokenizer.vocab_size})"
        )

    # ------------------------------------------------------------------ properties

    @property
    def sample_rate(self) -> int:
        """Rate in Hz the model computes features at (inputs are resampled to it)."""
        return int(self.module.sample_rate)

    @property
    def frame_shift_s(self) -> float:
        """Seconds between encoder output frames."""
        return float(self.module.frame_shift_s)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the weights (and of the features fed to the encoder)."""
        return next(self.module.parameters()).dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> SpeechModel:
        """Move (and optionally cast) the model in place; returns self."""
        if device is not None:
            self.module.to(_resolve_device(device))
        resolved = _resolve_dtype(dtype)
        if resolved is not None:
            self.module.to(resolved)
        return self

    # ------------------------------------------------------------------ internals

    def _inputs(self, audio: Any, sample_rate: int | None) -> tuple[list[np.ndarray], bool]:
        """Load every input (all checked before any compute); returns (waves, is_single)."""
        if _is_single(audio):
            return [_load_one(audio, 0, sample_rate, self.sample_rate)], True
        if isinstance(audio, (list, tuple)):
            return [
                _load_one(item, i, sample_rate, self.sample_rate) for i, item in enumerate(audio)
            ], False
        raise AudioError(
            "audio must be a file path, a numpy array or torch tensor (with sample_rate), "
            f"(samples, sample_rate), or a list of these; got {type(audio).__name__}"
        )

    def _batches(self, waves: list[np.ndarray], batch_size: int, fn: Callable) -> list[Any]:
        """Run ``fn(feats, feat_lens)`` (-> one result per row) over length-sorted batches.

        Sorting by length keeps padding (wasted compute) small; results are put back in
        input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(waves)), key=lambda i: -waves[i].shape[0])
        results: list[Any] = [None] * len(waves)
        fbank = self.module.feature_extractor()
        device, dtype = self.device, self.dtype
        # no_grad rather than inference_mode: returned embeddings must stay usable as
        # ordinary tensors (e.g. inputs to a probe trained with autograd).
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                lens = torch.tensor([waves[i].shape[0] for i in idx], dtype=torch.int64)
                batch = torch.zeros(len(idx), int(lens.max()), dtype=torch.float32)
                for row, i in enumerate(idx):
                    batch[row, : waves[i].shape[0]] = torch.from_numpy(waves[i])
                feats, feat_lens = fbank(batch.to(device), lens.to(device))
                # Features in float32 (fbank precision), then the weights' dtype.
                for row, out in zip(idx, fn(feats.to(dtype), feat_lens), strict=True):
                    results[row] = out
        return results

    def _transcript(self, hyp: CtcHypothesis, duration: float) -> Transcript:
        shift = self.frame_shift_s
        text = self.tokenizer.decode(hyp.tokens)
        words = word_timestamps(hyp, self.tokenizer, shift)
        # The last encoder frame can reach past the audio's end (frames are rounded up).
        for w in words:
            w.start = min(w.start, duration)
            w.end = min(w.end, duration)
        times = [
            (min(s * shift, duration), min((e + 1) * shift, duration))
            for s, e in zip(hyp.token_frames, hyp.token_end_frames, strict=True)
        ]
        return Transcript(
            text=text,
            words=words,
            tokens=[self.tokenizer.id_to_token(t) for t in hyp.tokens],
            token_confidences=[float(c) for c in hyp.token_confidences],
            token_times=times,
        )

    # ------------------------------------------------------------------ public

    def transcribe(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        method: str = "greedy",
        beam: int = 4,
        timestamps: bool = False,
        confidences: bool = False,
        batch_size: int = 8,
    ) -> str | Transcript | list[str] | list[Transcript]:
        """Transcribe one input or a list of inputs.

        Args:
            audio: a file path; a numpy array / torch tensor of samples, (S,) or 2-D with
                channels on the short axis, floats in [-1, 1] or PCM integers; a
                ``(samples, sample_rate)`` tuple; or a list of any of these.
            sample_rate: rate in Hz of array inputs given without their own rate (files
                carry theirs). Any rate works: inputs are resampled with soxr.
            method: ``"greedy"`` (best path) or ``"beam"`` (CTC: prefix beam search;
                transducer: modified beam search).
            beam: beam width for ``method="beam"``.
            timestamps: return :class:`Transcript` objects with word/token times.
            confidences: return :class:`Transcript` objects (confidences included).
            batch_size: inputs per forward pass (inputs are sorted by length first). All
                inputs are read and checked before decoding starts, so a bad one fails fast.

        Returns:
            The text (str) for one input, a list of texts for a list (input order); with
            ``timestamps`` or ``confidences``, :class:`Transcript` object(s) instead.

        Raises:
            AudioError: a file is missing or undecodable, an input is empty or non-finite,
                an array comes without its sample rate; the message names the input.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "beam" and beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        waves, single = self._inputs(audio, sample_rate)

        def search(feats: torch.Tensor, feat_lens: torch.Tensor) -> list[CtcHypothesis]:
            return self._search(self.module, feats, feat_lens, method, beam)

        hyps = self._batches(waves, batch_size, search)
        if timestamps or confidences:
            out: list[Any] = [
                self._transcript(h, w.shape[0] / self.sample_rate)
                for h, w in zip(hyps, waves, strict=True)
            ]
        else:
            out = [self.tokenizer.decode(h.tokens) for h in hyps]
        return out[0] if single else out

    def embed(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        layers: Sequence[int] = (-1,),
        as_dict: bool = False,
        batch_size: int = 8,
    ) -> list[torch.Tensor] | dict[int, torch.Tensor] | list[Any]:
        """Encoder layer outputs of one input or a list of inputs.

        Args:
            audio, sample_rate: as for :meth:`transcribe`.
            layers: encoder layers to return: 0 is the front-end output (block input),
                ``i`` the output of block ``i``, negative counts from the end (-1 = last).
            as_dict: return ``{layer: tensor}`` (keys as given) instead of a list.
            batch_size: inputs per forward pass.

        Returns:
            Per input, a list (in ``layers`` order) of float32 CPU tensors (T', C), T'
            being the input's encoder frames (``frame_shift_s`` apart); or the dict. For a
            list of inputs, a list of those.
        """
        if isinstance(layers, int):
            layers = (layers,)
        layers = tuple(int(i) for i in layers)
        if not layers:
            raise ValueError("layers must name at least one encoder layer")
        waves, single = self._inputs(audio, sample_rate)

        def encode(feats: torch.Tensor, feat_lens: torch.Tensor) -> list[Any]:
            _, out_lens, outs = self.module.encode(feats, feat_lens, return_layers=layers)
            rows = []
            for n, length in enumerate(out_lens.tolist()):
                # A copy, so that one kept embedding does not pin the whole batch.
                per_layer = [o[n, :length].to("cpu", torch.float32, copy=True) for o in outs]
                rows.append(dict(zip(layers, per_layer, strict=True)) if as_dict else per_layer)
            return rows

        out = self._batches(waves, batch_size, encode)
        return out[0] if single else out

    def stream(
        self,
        *,
        method: str = "greedy",
        beam: int = 4,
        chunk_size: int | None = None,
        left_context: int | None = None,
    ) -> AudioStream:
        """Start recognising one live audio stream (transducer models).

        Args:
            method: ``"greedy"`` or ``"beam"`` (modified beam search).
            beam: beam width for ``method="beam"``.
            chunk_size: encoder frames per attention chunk (latency = chunk x
                ``frame_shift_s``); default: the encoder's configured chunk, or
                :data:`DEFAULT_STREAM_CHUNK` frames for a full-context encoder.
            left_context: encoder frames of cached left context (-1 = all); default:
                the model's.

        Returns:
            An :class:`AudioStream`: feed it pieces with ``accept_waveform``.

        Raises:
            SpeechfmError: the model is not a transducer (CTC models transcribe whole
                inputs with :meth:`transcribe`).
        """
        if self.family != "transducer":
            raise SpeechfmError(
                f"{self.path}: streaming recognition needs a transducer model; this is a "
                f"{self.family} model (use transcribe())"
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if chunk_size is None:
            own = int(getattr(self.module.encoder, "chunk_size", -1) or -1)
            chunk_size = own if own > 0 else DEFAULT_STREAM_CHUNK
        return AudioStream(self, method=method, beam=beam, chunk_size=chunk_size,
                           left_context=left_context)


class AudioStream:
    """Live recognition of one audio stream: pieces of audio in, text so far out.

    Pieces can be of any length (even empty) and at any rate (resampled on the fly with
    soxr's streaming resampler; all pieces of a stream share one rate). Features come from
    kaldi-native-fbank's online extractor (the extractor the training features came
    from); every completed encoder chunk advances the search at once, so the text grows
    while audio arrives. The final result equals decoding the whole recording with the
    model's chunked attention. Made by :meth:`SpeechModel.stream`.
    """

    def __init__(self, model: SpeechModel, *, method: str, beam: int, chunk_size: int | None,
                 left_context: int | None) -> None:
        import kaldi_native_fbank as knf

        from speechfm.decode.transducer import TransducerStream

        self._model = model
        module = model.module
        self._stream = TransducerStream(
            module, method="greedy" if method == "greedy" else "modified_beam", beam=beam,
            chunk_size=chunk_size, left_context=left_context,
        )
        self._fbank = knf.OnlineFbank(module.fbank.config.to_knf())
        self._frames_used = 0
        self._rate: int | None = None
        self._resampler: Any = None
        self.num_samples = 0
        """Samples accepted so far, at the model's rate."""
        self.finished = False
        """True after :meth:`finalize`."""

    @property
    def num_frames(self) -> int:
        """Encoder frames decoded so far (``x frame_shift_s`` = audio recognised)."""
        return self._stream.num_frames

    @property
    def text(self) -> str:
        """The text recognised so far."""
        return self._model.tokenizer.decode(self._stream.result().tokens)

    def _feed(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size:
            self._fbank.accept_waveform(float(self._model.sample_rate), x)
            self.num_samples += x.size
        ready = self._fbank.num_frames_ready
        if ready > self._frames_used:
            frames = np.stack([self._fbank.get_frame(i) for i in range(self._frames_used, ready)])
            self._stream.accept_features(torch.from_numpy(frames))
            self._frames_used = ready

    def accept_waveform(self, samples: Any, sample_rate: int | None = None) -> str:
        """Feed the next piece of audio.

        Args:
            samples: (S,) or (channels, S) floats in [-1, 1] or PCM integers (S may be 0).
            sample_rate: the piece's rate in Hz; required on the first piece, and later
                pieces must keep it (None = the stream's rate).

        Returns:
            The text recognised so far.

        Raises:
            AudioError: no rate, a changed rate, non-finite samples, a finished stream.
        """
        if self.finished:
            raise AudioError("this stream is finalized; start a new one with model.stream()")
        rate = self._rate if sample_rate is None else sample_rate
        if rate is None:
            raise AudioError("the first audio piece needs its sample_rate (Hz)")
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise AudioError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        if self._rate is None:
            self._rate = int(rate)
            if self._rate != self._model.sample_rate:
                import soxr

                self._resampler = soxr.ResampleStream(self._rate, self._model.sample_rate, 1,
                                                      dtype="float32")
        elif rate != self._rate:
            raise AudioError(f"audio piece at {rate} Hz in a stream started at {self._rate} Hz")
        name = f"audio piece at sample {self.num_samples}"
        if (_is_array(samples) and samples.shape[-1] == 0) or np.size(samples) == 0:
            return self.text
        x = _to_float_mono(samples, name).astype(np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._feed(x)
        return self.text

    def finalize(self, *, timestamps: bool = False) -> str | Transcript:
        """End of audio: flush the resampler, the last feature frames and the last chunk.

        Args:
            timestamps: return a :class:`Transcript` (word and token times, confidences)
                instead of the text.
        """
        if not self.finished:
            if self._resampler is not None:
                self._feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._fbank.input_finished()
            self._feed(np.zeros(0, np.float32))
            hyp = self._stream.finalize()
            self.finished = True
            self._hyp = _as_ctc_hypothesis(hyp)
        if timestamps:
            return self._model._transcript(self._hyp, self.num_samples / self._model.sample_rate)
        return self._model.tokenizer.decode(self._hyp.tokens)
