"""The ONNX graphs compute what the PyTorch model computes (onnxruntime, random weights).

- CTC / offline transducer encoders: log-probs and encoder output against the model's own
  forward at lengths other than the traced one, padded batches included;
- the streaming encoder, fed chunk by chunk with its states as sherpa-onnx feeds it,
  against the model's chunked-attention forward (``encode(chunk_size=, left_context=)``),
  for every positional scheme the streaming export takes, and for streams at different
  points batched together;
- decoder and joiner against the predictor and joiner;
- the files, metadata and export.json sherpa-onnx reads, and the exports refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")

from export_helpers import make_model_dir, random_feats  # noqa: E402

from speechfm.export import ExportError, export_onnx  # noqa: E402
from speechfm.models.io import load_model_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4  # fp32 ONNX vs PyTorch


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _metadata(path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _max_diff(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.abs(a - b.numpy()).max())


def stream_onnx(sess, feats: torch.Tensor, meta: dict[str, str], *, start=None) -> np.ndarray:
    """Run the streaming encoder over (T, F) frames as sherpa-onnx does: ``T`` frames per
    call, advancing ``decode_chunk_len``, zero states; returns the (T', J) outputs."""
    t, shift = int(meta["T"]), int(meta["decode_chunk_len"])
    layers, left = int(meta["num_encoder_layers"]), int(meta["left_context"])
    dim, kernel = int(meta["encoder_dim"]), int(meta["cnn_module_kernel"])
    attn = np.zeros((layers, left, 1, dim), np.float32)
    cnn = np.zeros((layers, kernel - 1, 1, dim), np.float32)
    outs, p = [], 0
    while p + t <= feats.shape[0]:
        out, attn, cnn = sess.run(None, {"x": feats[None, p : p + t].numpy(), "attn_cache": attn,
                                         "cnn_cache": cnn, "processed_lens": np.array([p])})
        outs.append(out[0])
        p += shift
    return np.concatenate(outs)


def _chunked_reference(model, feats: torch.Tensor, chunk: int, left: int, **kw) -> torch.Tensor:
    with torch.no_grad():
        enc, _ = model.encode(feats[None], torch.tensor([feats.shape[0]]), chunk_size=chunk,
                              left_context=left, **kw)[:2]
        return model.joiner.encoder_proj(enc)[0]


@pytest.mark.parametrize("conformer", [
    {"pos_type": "rel_pos"},
    {"pos_type": "relative_key", "rel_left_max": 6, "rel_right_max": 2},
    {"pos_type": "abs", "final_norm": True, "conv_norm": "batch_norm"},
    {"pos_type": "none", "front_end": "stack", "subsampling_factor": 3},
], ids=["rel_pos", "relative_key", "abs+final_norm+bn", "none+stack"])
def test_streaming_encoder_equals_chunked_attention(tmp_path, conformer):
    model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True, **conformer})
    model = load_model_dir(model_dir).module
    chunk, left = 3, 7  # left context not a multiple of the chunk: partial chunks cached
    info = export_onnx(model_dir, tmp_path / "out", chunk_size=chunk, left_context=left)
    assert info["kind"] == "online_transducer" and info["sherpa_model_type"] == "conformer"
    meta = _metadata(tmp_path / "out" / "encoder.onnx")
    sess = _session(tmp_path / "out" / "encoder.onnx")
    feats = random_feats(1, 150, model.encoder.feature_dim, seed=3)[0]
    got = stream_onnx(sess, feats, meta)
    want = _chunked_reference(model, feats, chunk, left)
    # every chunk sherpa-onnx can run (T frames available) matches the whole-utterance pass
    assert got.shape[0] >= want.shape[0] - 2 * chunk and got.shape[0] % chunk == 0
    assert _max_diff(got, want[: got.shape[0]]) < TOL


def test_streams_at_different_points_batch_together(tmp_path):
    """sherpa-onnx stacks the states of streams that started at different times."""
    model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True})
    model = load_model_dir(model_dir).module
    export_onnx(model_dir, tmp_path / "out", chunk_size=4, left_context=8)
    meta = _metadata(tmp_path / "out" / "encoder.onnx")
    sess = _session(tmp_path / "out" / "encoder.onnx")
    t, shift = int(meta["T"]), int(meta["decode_chunk_len"])
    a, b = random_feats(2, 140, model.encoder.feature_dim, seed=5)
    attn = np.zeros((2, 8, 1, 32), np.float32)
    cnn = np.zeros((2, 4, 1, 32), np.float32)
    for k in range(3):  # stream b runs 3 chunks alone first
        _, attn, cnn = sess.run(None, {"x": b[None, k * shift : k * shift + t].numpy(),
                                       "attn_cache": attn, "cnn_cache": cnn,
                                       "processed_lens": np.array([k * shift])})
    states = [np.concatenate([np.zeros_like(s), s], axis=2) for s in (attn, cnn)]
    outs = []
    for k in range(4):  # then a (from its start) and b (from chunk 3) in one batch
        pa, pb = k * shift, (k + 3) * shift
        x = torch.stack([a[pa : pa + t], b[pb : pb + t]]).numpy()
        out, *states = sess.run(None, {"x": x, "attn_cache": states[0], "cnn_cache": states[1],
                                       "processed_lens": np.array([pa, pb])})
        outs.append(out)
    got = np.concatenate(outs, axis=1)
    want_a = _chunked_reference(model, a, 4, 8)[:16]
    want_b = _chunked_reference(model, b, 4, 8)[12:28]
    assert _max_diff(got[0], want_a) < TOL and _max_diff(got[1], want_b) < TOL


def test_ctc_log_probs_equal_the_model_at_any_length(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", "ctc")
    model = load_model_dir(model_dir).module
    info = export_onnx(model_dir, tmp_path / "out")
    assert info["kind"] == "offline_ctc" and info["files"] == {"model": "model.onnx",
                                                               "tokens": "tokens.txt"}
    sess = _session(tmp_path / "out" / "model.onnx")
    assert [o.name for o in sess.get_outputs()] == ["log_probs", "log_probs_len"]
    assert sess.get_outputs()[0].shape[2] == model.vocab_size  # sherpa-onnx reads V here
    for t, lens in ((57, [57]), (333, [333, 120]), (801, [801, 800, 9])):
        feats = random_feats(len(lens), t, model.encoder.feature_dim, seed=t)
        x_lens = torch.tensor(lens)
        log_probs, out_lens = sess.run(None, {"x": feats.numpy(), "x_lens": x_lens.numpy()})
        with torch.no_grad():
            want, want_lens = model.log_probs(feats, x_lens)
        assert out_lens.tolist() == want_lens.tolist()
        for i, n in enumerate(want_lens.tolist()):
            assert _max_diff(log_probs[i, :n], want[i, :n]) < TOL


@pytest.mark.parametrize("encoder", [
    {"conformer": {"chunk_size": 4, "left_context": 8}},
    {"normalization": "utterance"},
], ids=["chunked-attention", "utterance-norm"])
def test_ctc_export_keeps_the_encoders_settings(tmp_path, encoder):
    model_dir = make_model_dir(tmp_path / "m", "ctc", conformer=encoder.pop("conformer", {}),
                               encoder=encoder)
    model = load_model_dir(model_dir).module
    export_onnx(model_dir, tmp_path / "out")
    sess = _session(tmp_path / "out" / "model.onnx")
    feats = random_feats(2, 211, model.encoder.feature_dim, seed=9)
    x_lens = torch.tensor([211, 150])
    log_probs, _ = sess.run(None, {"x": feats.numpy(), "x_lens": x_lens.numpy()})
    with torch.no_grad():
        want, want_lens = model.log_probs(feats, x_lens)
    for i, n in enumerate(want_lens.tolist()):
        assert _max_diff(log_probs[i, :n], want[i, :n]) < TOL


def test_offline_transducer_and_the_cascades_two_passes(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True}, cascade=True)
    model = load_model_dir(model_dir).module
    feats = random_feats(2, 190, model.encoder.feature_dim, seed=2)
    x_lens = torch.tensor([190, 133])
    # offline: the final (second-encoder) pass, whole utterances
    info = export_onnx(model_dir, tmp_path / "off", mode="offline")
    assert info["kind"] == "offline_transducer" and info["encoder_pass"] == "final"
    enc, enc_lens = _session(tmp_path / "off" / "encoder.onnx").run(
        None, {"x": feats.numpy(), "x_lens": x_lens.numpy()})
    with torch.no_grad():
        want, want_lens = model.encode(feats, x_lens)
        want = model.joiner.encoder_proj(want)
    assert enc_lens.tolist() == want_lens.tolist()
    for i, n in enumerate(want_lens.tolist()):
        assert _max_diff(enc[i, :n], want[i, :n]) < TOL
    # online: the first (causal) pass, chunk by chunk
    info = export_onnx(model_dir, tmp_path / "on", chunk_size=4, left_context=12)
    assert info["kind"] == "online_transducer" and info["encoder_pass"] == "first"
    got = stream_onnx(_session(tmp_path / "on" / "encoder.onnx"), feats[0],
                      _metadata(tmp_path / "on" / "encoder.onnx"))
    want = _chunked_reference(model, feats[0], 4, 12, final_pass=False)
    assert _max_diff(got, want[: got.shape[0]]) < TOL


def test_decoder_and_joiner_equal_predictor_and_joiner(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True})
    model = load_model_dir(model_dir).module
    export_onnx(model_dir, tmp_path / "out")
    # sherpa-onnx starts a hypothesis from [blank] * context_size (some releases -1s)
    y = torch.tensor([[0, 0], [-1, 0], [3, 4], [5, 2]])
    (dec,) = _session(tmp_path / "out" / "decoder.onnx").run(None, {"y": y.numpy()})
    with torch.no_grad():
        want_dec = model.joiner.decoder_proj(model.predictor(y.clamp(min=0), need_pad=False)[:, 0])
    assert _max_diff(dec, want_dec) < TOL
    enc = torch.randn(4, dec.shape[1])
    (logit,) = _session(tmp_path / "out" / "joiner.onnx").run(
        None, {"encoder_out": enc.numpy(), "decoder_out": dec})
    with torch.no_grad():
        want = model.joiner(enc, torch.from_numpy(dec), project_input=False)
    assert logit.shape == (4, model.vocab_size) and _max_diff(logit, want) < TOL


def test_files_metadata_and_int8(tmp_path):
    model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True})
    model = load_model_dir(model_dir).module
    info = export_onnx(model_dir, tmp_path / "out", int8=True, chunk_size=5, left_context=10)
    out = tmp_path / "out"
    assert info == json.loads((out / "export.json").read_text())
    assert info["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx",
                             "joiner": "joiner.onnx", "tokens": "tokens.txt"}
    assert info["int8_files"]["encoder"] == "encoder.int8.onnx"
    assert all((out / f).is_file() for f in [*info["files"].values(),
                                             *info["int8_files"].values()])
    assert (out / "tokens.txt").read_text().splitlines()[:3] == ["<blk> 0", "<unk> 1", "▁ 2"]
    meta = _metadata(out / "encoder.onnx")
    # what OnlineConformerTransducerModel reads; T = 4 * (5 - 1) + 7 raw frames per call
    assert {k: meta[k] for k in ("model_type", "num_encoder_layers", "T", "decode_chunk_len",
                                 "left_context", "encoder_dim", "pad_length",
                                 "cnn_module_kernel")} == {
        "model_type": "conformer", "num_encoder_layers": "2", "T": "23",
        "decode_chunk_len": "20", "left_context": "10", "encoder_dim": "32",
        "pad_length": "3", "cnn_module_kernel": "5"}
    assert _metadata(out / "encoder.int8.onnx")["T"] == "23"
    dec_meta = _metadata(out / "decoder.onnx")
    assert dec_meta["vocab_size"] == str(model.vocab_size) and dec_meta["context_size"] == "2"
    # int8 encoder: close to fp32 (MatMul weights quantised, a few per cent of the range)
    feats = random_feats(1, 120, model.encoder.feature_dim, seed=4)[0]
    fp32 = stream_onnx(_session(out / "encoder.onnx"), feats, meta)
    int8 = stream_onnx(_session(out / "encoder.int8.onnx"), feats, meta)
    assert fp32.shape == int8.shape
    assert np.abs(int8 - fp32).mean() < 0.05 * np.abs(fp32).mean()


@pytest.mark.parametrize(("family", "kw", "match"), [
    ("ctc", {"mode": "online"}, "CTC models export offline"),
    ("transducer", {"mode": "online"}, "not causal"),
    ("transducer-causal", {"chunk_size": 0}, "chunk_size > 0"),
    ("fbank", {}, "frame_shift_ms=12.5 .*window_type='hamming'"),
    ("adapters", {}, "adapters"),
])
def test_exports_refused_with_a_reason(tmp_path, family, kw, match):
    if family == "fbank":
        model_dir = make_model_dir(tmp_path / "m", "ctc", encoder={"fbank": {
            "window_type": "hamming", "frame_shift_ms": 12.5}})
    elif family == "adapters":
        model_dir = make_model_dir(tmp_path / "m", model={"adapters": [
            {"name": "a", "kind": "bottleneck", "points": ["after_block"]}]})
    elif family == "transducer-causal":
        model_dir = make_model_dir(tmp_path / "m", conformer={"conv_causal": True})
    else:
        model_dir = make_model_dir(tmp_path / "m", family)
    with pytest.raises(ExportError, match=match):
        export_onnx(model_dir, tmp_path / "out", **kw)


def test_traceable_ops_equal_the_originals():
    """What export_friendly_ops swaps in while tracing computes the same as the originals."""
    from speechfm.export.modules import _chunk_mask_traceable, _rel_shift_gather
    from speechfm.nn.masks import chunk_attention_mask
    from speechfm.nn.positional import rel_shift

    for q_len, k_len in ((1, 1), (5, 5), (3, 11), (7, 9)):
        scores = torch.randn(2, 3, q_len, q_len + k_len - 1)
        assert torch.equal(_rel_shift_gather(scores, k_len), rel_shift(scores, k_len))
    for frames in (1, 6, 17):
        for chunk in (-1, 1, 4, 16, 40):
            for left in (-1, 0, 3, 8):
                assert torch.equal(_chunk_mask_traceable(frames, chunk, left),
                                   chunk_attention_mask(frames, chunk, left))
