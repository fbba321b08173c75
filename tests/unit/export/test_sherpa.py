"""Exports run in sherpa-onnx and give the PyTorch model's text.

The models are the tone-"speech" CTC and streaming transducer of tests/unit/test_api*.py,
trained here for a few seconds: every utterance has a text worth comparing. sherpa-onnx
computes its own features, so the first test checks that the options the export derives
from a model's fbank settings make sherpa-onnx's frames equal speechfm's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
sherpa_onnx = pytest.importorskip("sherpa_onnx",
                                  reason="the export extra (sherpa-onnx) is not installed")

from export_helpers import make_model_dir  # noqa: E402

from speechfm.export import (  # noqa: E402
    create_recognizer,
    export_onnx,
    recognize,
    sherpa_feature_config,
    tail_padding_s,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = (0, 4, 9)  # noise draws none of the training audio used (1-3 and 12-14)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _utterances(tone):
    return [(text, tone.synth(text, seed=seed)) for text in tone.TEXTS for seed in SEEDS]


@pytest.fixture(scope="module")
def online_export(tmp_path_factory):
    """An online export of a random streaming transducer (its recognizer hosts feature
    streams of any settings)."""
    out = tmp_path_factory.mktemp("online")
    export_onnx(make_model_dir(out / "m", conformer={"conv_causal": True}), out / "x")
    return out / "x"


@pytest.mark.parametrize("fbank", [
    {},
    {"num_mel_bins": 40, "high_freq": 3800.0},
    {"snip_edges": True, "low_freq": 64.0, "high_freq": -400.0, "num_mel_bins": 64},
    {"waveform_scale": 32768.0},
    {"sample_rate": 8000, "num_mel_bins": 40, "high_freq": 3800.0},
], ids=["default", "40-bins-3.8k", "snip-edges", "int16-scale", "8k"])
def test_sherpa_onnx_computes_speechfms_features(online_export, tone, fbank):
    from speechfm.features.fbank import FbankConfig, compute_fbank

    config = FbankConfig(**fbank)
    options = sherpa_feature_config(config)
    info = {**options}
    rec = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(online_export / "tokens.txt"), encoder=str(online_export / "encoder.onnx"),
        decoder=str(online_export / "decoder.onnx"), joiner=str(online_export / "joiner.onnx"),
        num_threads=1, sample_rate=info.pop("sampling_rate"), model_type="conformer", **info)
    rate = config.sample_rate
    audio = tone.synth("ab ca", sr=rate, seed=2)
    want = compute_fbank(audio, rate, config)
    stream = rec.create_stream()
    stream.accept_waveform(rate, audio)
    stream.input_finished()
    got = np.asarray(stream.get_frames(0, want.shape[0])).reshape(want.shape)
    assert float(np.abs(got - want).max()) < 1e-4


def test_ctc_export_gives_the_models_text(trained_ctc_dir, tone, tmp_path):
    import speechfm

    model = speechfm.load(trained_ctc_dir)
    info = export_onnx(trained_ctc_dir, tmp_path, int8=True)
    assert info["feature_config"]["high_freq"] == 3800.0  # the model's, not sherpa's -400
    utts = _utterances(tone)
    want = model.transcribe([a for _, a in utts], sample_rate=tone.SR)
    assert want == [t for t, _ in utts]  # the model knows the texts
    for int8 in (False, True):
        rec = create_recognizer(tmp_path, int8=int8)
        got = [recognize(rec, a, tone.SR) for _, a in utts]
        assert [_norm(g) for g in got] == want, f"int8={int8}"
        streams = [rec.create_stream() for _ in utts]  # batched: padded to the longest
        for s, (_, a) in zip(streams, utts, strict=True):
            s.accept_waveform(tone.SR, a)
        rec.decode_streams(streams)
        assert [_norm(s.result.text) for s in streams] == want
    # the graph's log-probs: fp32 equal to PyTorch's, int8 close
    from speechfm.features.fbank import compute_fbank

    module = model.module
    feats = torch.from_numpy(compute_fbank(utts[0][1], tone.SR, module.encoder.fbank.config))
    with torch.no_grad():
        ref, _ = module.log_probs(feats[None], torch.tensor([feats.shape[0]]))
    inputs = {"x": feats[None].numpy(), "x_lens": np.array([feats.shape[0]])}
    fp32 = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, inputs)[0]
    int8 = ort.InferenceSession(str(tmp_path / "model.int8.onnx")).run(None, inputs)[0]
    assert float(np.abs(fp32 - ref.numpy()).max()) < 1e-4
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() > 0.95
    assert float(np.abs(np.exp(int8) - np.exp(fp32)).max()) < 0.2


def test_streaming_transducer_export_gives_the_streams_text(trained_transducer_dir, tone,
                                                            tmp_path):
    import speechfm

    chunk, left = 4, 32
    model = speechfm.load(trained_transducer_dir)
    info = export_onnx(trained_transducer_dir, tmp_path, int8=True, chunk_size=chunk,
                       left_context=left)
    assert info["kind"] == "online_transducer"
    tail = tail_padding_s(tmp_path)
    utts = _utterances(tone)
    padded = [np.concatenate([a, np.zeros(int(tail * tone.SR), np.float32)]) for _, a in utts]
    want = []
    for audio in padded:  # the PyTorch stream on the same audio, in 100 ms pieces
        stream = model.stream(chunk_size=chunk, left_context=left)
        for start in range(0, audio.shape[0], 1600):
            stream.accept_waveform(audio[start : start + 1600], tone.SR)
        want.append(stream.finalize())
    assert want == [t for t, _ in utts]
    for int8 in (False, True):
        rec = create_recognizer(tmp_path, int8=int8)
        got = [recognize(rec, a, tone.SR, tail_s=tail) for _, a in utts]
        assert [_norm(g) for g in got] == want, f"int8={int8}"
    # Streams that start at different times share the encoder calls (states stacked).
    rec = create_recognizer(tmp_path)
    streams = [rec.create_stream() for _ in padded]
    piece = 800
    for step in range(max(a.shape[0] // piece for a in padded) + 3 * len(padded) + 2):
        for i, (s, audio) in enumerate(zip(streams, padded, strict=True)):
            start = (step - 3 * i) * piece  # stream i joins 3 pieces after stream i - 1
            if 0 <= start < audio.shape[0]:
                s.accept_waveform(tone.SR, audio[start : start + piece])
                if start + piece >= audio.shape[0]:
                    s.input_finished()
        while ready := [s for s in streams if rec.is_ready(s)]:
            rec.decode_streams(ready)
    assert [_norm(rec.get_result(s)) for s in streams] == want


def test_offline_export_of_a_streaming_transducer(trained_transducer_dir, tone, tmp_path):
    import speechfm

    model = speechfm.load(trained_transducer_dir)
    info = export_onnx(trained_transducer_dir, tmp_path, mode="offline")
    assert info["kind"] == "offline_transducer" and info["chunk_size"] == -1
    utts = _utterances(tone)
    want = model.transcribe([a for _, a in utts], sample_rate=tone.SR)
    assert want == [t for t, _ in utts]
    rec = create_recognizer(tmp_path)
    assert [_norm(recognize(rec, a, tone.SR)) for _, a in utts] == want


def test_cli_export(trained_transducer_dir, tmp_path, capsys):
    from speechfm.cli import main

    out = tmp_path / "onnx"
    assert main(["export", str(trained_transducer_dir), "--format", "onnx", "--out", str(out),
                 "--int8", "--chunk-size", "4", "--left-context", "16"]) == 0
    printed = capsys.readouterr().out
    assert "online_transducer" in printed and "encoder (int8)" in printed
    assert "high_freq=3800.0" in printed
    for name in ("encoder", "decoder", "joiner"):
        assert (out / f"{name}.onnx").is_file() and (out / f"{name}.int8.onnx").is_file()
    assert create_recognizer(out, int8=True) is not None
    assert main(["export", str(trained_transducer_dir), "--out", str(tmp_path / "x"),
                 "--chunk-size", "0"]) == 2
    assert "chunk_size > 0" in capsys.readouterr().err
