"""speechfm.models.ctc: config round trip, forward shapes, CMVN buffers, loss, training
contract, search, memorisation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechfm.config import override_dataclass
from speechfm.decode import ctc_greedy_search, ctc_prefix_beam_search
from speechfm.decode.ctc import CtcHypothesis
from speechfm.models.ctc import (
    CtcModel,
    CtcModelConfig,
    create_ctc_model,
    ctc_base,
    ctc_large,
    ctc_small,
    ctc_tiny,
)

FEAT = 20
VOCAB = 8

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _config(**overrides) -> CtcModelConfig:
    """ctc_tiny on 20-dim fbank (small and fast); ``overrides`` are nested mappings of
    fields, e.g. ``encoder={"normalization": "none"}``."""
    base = override_dataclass(
        ctc_tiny(VOCAB),
        {"encoder": {"fbank": {"num_mel_bins": FEAT}, "conformer": {"input_dim": FEAT}}},
    )
    return override_dataclass(base, overrides)


def _model(**overrides) -> CtcModel:
    torch.manual_seed(0)
    return create_ctc_model(_config(**overrides))


def _batch(lens=(48, 40, 44), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lens), max(lens), FEAT, generator=g), torch.tensor(lens)


def _train_batch(feats, lens, targets, cut_ids=None):
    """The training contract's batch dict."""
    ids = cut_ids if cut_ids is not None else [f"utt{i}" for i in range(len(targets))]
    return {"features": feats, "x_lens": lens, "targets": targets, "cut_ids": ids}


# ------------------------------------------------------------------------------ config


def test_config_round_trip_through_json():
    cfg = _config(encoder={"normalization": "none", "specaug": {"time_warp": 3}},
                  head_dropout=0.2)
    data = json.loads(json.dumps(cfg.to_dict()))
    # The family is the class' (config.json's top level names it), not a config key.
    assert "family" not in data and CtcModelConfig.family == "ctc"
    enc = data["encoder"]
    assert enc["conformer"]["dim"] == cfg.encoder.conformer.dim
    assert enc["fbank"]["num_mel_bins"] == FEAT and enc["conformer"]["input_dim"] == FEAT
    assert enc["normalization"] == "none" and enc["specaug"]["time_warp"] == 3
    assert data["head_dropout"] == 0.2
    back = CtcModelConfig.from_dict(data)
    assert back == cfg
    assert back.frame_shift_s == pytest.approx(0.04)
    assert back.encoder.frame_shift_s == pytest.approx(0.04)


def test_config_errors():
    data = _config().to_dict()
    with pytest.raises(ValueError, match="unknown CtcModelConfig keys"):
        CtcModelConfig.from_dict({**data, "vocab": 3})
    # "family" is no config key (any value), and the pre-SpeechEncoder fields are gone.
    with pytest.raises(ValueError, match=r"unknown CtcModelConfig keys.*family"):
        CtcModelConfig.from_dict({**data, "family": "transducer"})
    with pytest.raises(ValueError, match=r"unknown CtcModelConfig keys.*use_cmvn"):
        CtcModelConfig.from_dict({**data, "use_cmvn": False})
    with pytest.raises(ValueError, match=r"encoder\.specaug_time_warp"):
        CtcModelConfig.from_dict({**data, "encoder": {**data["encoder"], "specaug_time_warp": 3}})
    with pytest.raises(ValueError, match="required keys missing.*vocab_size"):
        CtcModelConfig.from_dict({k: v for k, v in data.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="input_dim"):
        _config(encoder={"fbank": {"num_mel_bins": 40}}).validate()
    with pytest.raises(ValueError, match="input_dim"):
        CtcModelConfig.from_dict(_config(encoder={"fbank": {"num_mel_bins": 40}}).to_dict())
    with pytest.raises(ValueError, match="vocab_size"):
        _config(vocab_size=1).validate()
    with pytest.raises(ValueError, match="head_dropout"):
        _config(head_dropout=1.0).validate()
    with pytest.raises(ValueError, match=r"specaug\.freq_mask_width"):
        _config(encoder={"specaug": {"freq_mask_width": -1}}).validate()
    with pytest.raises(ValueError, match="normalization"):
        _config(encoder={"normalization": "per_speaker"}).validate()


def test_named_sizes_validate():
    for size in (ctc_tiny, ctc_small, ctc_base, ctc_large):
        cfg = size(500)
        cfg.validate()
        assert cfg.vocab_size == 500
        assert cfg.encoder.conformer.input_dim == cfg.encoder.fbank.feature_dim
    dims = [size(500).encoder.conformer.dim for size in (ctc_small, ctc_base, ctc_large)]
    assert dims == sorted(dims) and len(set(dims)) == 3


# ------------------------------------------------------------------------------ forward


def test_forward_shapes_and_lengths():
    model = _model().eval()
    feats, lens = _batch()
    log_probs, out_lens = model.log_probs(feats, lens)
    assert out_lens.tolist() == model.encoder.output_lengths(lens).tolist()
    assert log_probs.shape == (3, int(out_lens.max()), VOCAB)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))
    # padding does not change an utterance's output
    alone, alone_lens = model.log_probs(feats[1:2, : lens[1]], lens[1:2])
    torch.testing.assert_close(alone[0, : alone_lens[0]], log_probs[1, : out_lens[1]])
    enc, enc_lens, layers = model.encode(feats, lens, return_layers=[0, -1])
    assert enc.shape == (3, log_probs.shape[1], model.encoder.dim) and len(layers) == 2
    assert enc_lens.tolist() == out_lens.tolist()
    # the head reads the encoder output
    torch.testing.assert_close(torch.log_softmax(model.head(enc), -1), log_probs)


def test_log_softmax_stays_float32_under_bf16_autocast():
    model = _model().eval()
    feats, lens = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _ = model.log_probs(feats, lens)
    assert log_probs.dtype == torch.float32 and torch.isfinite(log_probs).all()


def test_specaugment_only_in_training():
    model = _model(encoder={"specaugment": True, "specaug": {"freq_mask_width": 8}})
    assert model.encoder.specaugment is not None
    assert model.encoder.specaugment.freq_mask_width == 8
    feats, lens = _batch()
    model.eval()
    a, _ = model.log_probs(feats, lens)
    b, _ = model.log_probs(feats, lens)
    torch.testing.assert_close(a, b)
    model.train()  # tiny has no dropout: only SpecAugment can make a difference
    torch.manual_seed(3)
    c, _ = model.log_probs(feats, lens)
    assert not torch.allclose(a, c)
    no_aug = _model(encoder={"specaugment": False}).train()
    assert no_aug.encoder.specaugment is None
    d, _ = no_aug.log_probs(feats, lens)
    torch.testing.assert_close(a, d)


def test_forward_waveforms_is_fbank_then_encode():
    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    wavs = 0.1 * torch.randn(2, 8000, generator=g)
    lens = torch.tensor([8000, 5600])
    enc, out_lens = model.encoder.forward_waveforms(wavs, lens)
    feats, feat_lens = model.encoder.feature_extractor()(wavs, lens)
    assert feats.shape[-1] == FEAT == model.encoder.feature_dim
    ref, ref_lens = model.encode(feats, feat_lens)
    torch.testing.assert_close(enc, ref)
    assert out_lens.tolist() == ref_lens.tolist()
    with pytest.raises(ValueError, match="8000 Hz"):
        model.encoder.forward_waveforms(wavs, lens, sample_rate=8000)
    assert model.encoder.frame_shift_s == pytest.approx(0.04)
    assert model.encoder.sample_rate == 16000


# --------------------------------------------------------------------------------- CMVN


def test_cmvn_buffers_are_saved_and_applied(tmp_path):
    model = _model().eval()
    state = model.state_dict()
    assert {"encoder.cmvn.mean", "encoder.cmvn.var", "encoder.cmvn.inv_std"} <= set(state)
    assert not any(k.startswith("cmvn.") for k in state)
    assert any(k.startswith("encoder.conformer.") for k in state)
    feats, lens = _batch()
    mean = torch.linspace(-2.0, 2.0, FEAT)
    var = torch.linspace(0.5, 4.0, FEAT)
    before, _ = model.log_probs(feats, lens)
    model.encoder.set_cmvn(mean, var)
    after, _ = model.log_probs(feats, lens)
    assert not torch.allclose(before, after)

    # Same weights without normalisation, fed normalised features, give the same output.
    plain = _model(encoder={"normalization": "none"}).eval()
    assert plain.encoder.cmvn is None
    assert not any("cmvn" in k for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "cmvn" not in k})
    valid = (torch.arange(feats.shape[1])[None, :] < lens[:, None]).unsqueeze(-1)
    normed = ((feats - mean) / var.sqrt()).masked_fill(~valid, 0.0)
    ref, _ = plain.log_probs(normed, lens)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)

    # The checkpoint alone restores the statistics.
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = _model().eval()
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    torch.testing.assert_close(fresh.encoder.cmvn.mean, mean.double())
    restored, _ = fresh.log_probs(feats, lens)
    torch.testing.assert_close(restored, after)

    with pytest.raises(ValueError, match="'none'.*no CMVN buffers"):
        plain.encoder.set_cmvn(mean, var)
    with pytest.raises(ValueError, match=r"\(20,\)"):
        model.encoder.set_cmvn(mean[:5], var[:5])
    with pytest.raises(ValueError, match="non-negative"):
        model.encoder.set_cmvn(mean, -var)
    with pytest.raises(ValueError, match="non-finite"):
        model.encoder.set_cmvn(mean, var.clone().fill_(float("nan")))
    torch.testing.assert_close(model.encoder.cmvn.mean, mean.double())  # failed calls change nothing


# --------------------------------------------------------------------------------- loss


def test_compute_loss_and_stats():
    model = _model().eval()
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    loss, stats = model.compute_loss(feats, lens, targets)
    assert set(stats) == {"loss", "num_utts", "num_infinite", "num_tokens"}
    assert stats["num_utts"] == 3 and stats["num_infinite"] == 0 and stats["num_tokens"] == 6
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-6)
    # It is the summed CTC loss of the log-posteriors.
    with torch.no_grad():
        log_probs, out_lens = model.log_probs(feats, lens)
    ref = sum(
        torch.nn.functional.ctc_loss(
            log_probs[i, : out_lens[i]], torch.tensor(t), out_lens[i : i + 1],
            torch.tensor([len(t)]), reduction="sum",
        )
        for i, t in enumerate(targets)
    )
    assert loss.item() == pytest.approx(float(ref), rel=1e-5)


def test_compute_loss_reports_infeasible_utterances():
    model = _model().train()
    feats, lens = _batch()
    frames = model.encoder.output_lengths(lens).tolist()  # [11, 9, 10]
    targets = [[1, 2], [3] * (frames[1] + 1), [4, 5]]
    loss, stats = model.compute_loss(feats, lens, targets, utt_ids=["a", "b", "c"])
    assert stats["num_infinite"] == 1 and stats["num_utts"] == 2
    assert stats["num_tokens"] == 4  # the infeasible utterance's tokens do not count
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="utterance 'b'.*blank"):
        model.compute_loss(feats, lens, [[1], [0, 2], [3]], utt_ids=["a", "b", "c"])


def test_compute_loss_is_differentiable():
    model = _model().train()
    feats, lens = _batch()
    frames = model.encoder.output_lengths(lens).tolist()
    targets = [[1, 2], [3] * (frames[1] + 1), [4, 5]]  # one infeasible utterance
    loss, _ = model.compute_loss(feats, lens, targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_training_contract_is_the_summed_loss_per_token():
    model = _model().eval()
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    loss, count, stats = model(_train_batch(feats, lens, targets))
    ref, ref_stats = model.compute_loss(feats, lens, targets)
    torch.testing.assert_close(loss, ref)
    assert count == 6 == ref_stats["num_tokens"]
    assert stats == {"num_utts": 3.0, "num_infeasible": 0.0}

    # An infeasible utterance adds nothing, neither loss nor tokens, and is counted.
    frames = model.encoder.output_lengths(lens).tolist()
    bad = [[1, 2], [3] * (frames[1] + 1), [4, 5]]
    loss, count, stats = model.train()(_train_batch(feats, lens, bad, ["a", "b", "c"]))
    assert torch.isfinite(loss) and count == 4
    assert stats == {"num_utts": 2.0, "num_infeasible": 1.0}
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="utterance 'b'.*blank"):
        model(_train_batch(feats, lens, [[1], [0, 2], [3]], ["a", "b", "c"]))

    # A batch whose cuts were all bad: a zero loss that still reaches every parameter
    # (DDP's gradient collectives stay in step), and nothing counted.
    model.zero_grad()
    empty = {"features": feats[:0], "x_lens": lens[:0], "targets": [], "cut_ids": []}
    loss, count, _ = model(empty)
    assert loss.item() == 0.0 and count == 0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.head.parameters())


# ------------------------------------------------------------------------------ search


def test_recognize_greedy_and_beam():
    model = _model().eval()
    feats, lens = _batch()
    with torch.no_grad():
        log_probs, out_lens = model.log_probs(feats, lens)
        greedy = model.recognize(feats, lens)
        beam = model.recognize(feats, lens, method="beam", beam=4)
    assert all(isinstance(h, CtcHypothesis) for h in greedy + beam)
    assert [h.tokens for h in greedy] == ctc_greedy_search(log_probs, out_lens)
    ref = ctc_prefix_beam_search(log_probs, out_lens, beam=4)
    assert [h.tokens for h in beam] == [b[0].tokens for b in ref]
    for h, n in zip(greedy, out_lens.tolist(), strict=True):
        assert len(h.token_frames) == len(h.tokens) and all(0 <= f < n for f in h.token_frames)
    with pytest.raises(ValueError, match="method"):
        model.recognize(feats, lens, method="viterbi")


def test_memorises_a_tiny_task():
    """5 random "utterances" learnt to zero greedy errors within 100 Adam steps."""
    model = _model(encoder={"specaugment": False})
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([48, 40, 44, 36, 48])
    feats = torch.randn(5, 48, FEAT, generator=g)
    sizes = torch.randint(2, 6, (5,), generator=g).tolist()
    targets = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in sizes]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    batch = _train_batch(feats, lens, targets)
    for _ in range(100):
        model.train()
        loss, _, stats = model(batch)  # the training contract
        opt.zero_grad()
        (loss / stats["num_utts"]).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert sum(losses[-10:]) < sum(losses[:10])
    model.eval()
    with torch.no_grad():
        log_probs, out_lens = model.log_probs(feats, lens)
        greedy = model.recognize(feats, lens)
        beam = model.recognize(feats, lens, method="beam", beam=4)
    assert ctc_greedy_search(log_probs, out_lens) == targets
    beams = ctc_prefix_beam_search(log_probs, out_lens, beam=4)
    assert [b[0].tokens for b in beams] == targets
    assert [h.tokens for h in greedy] == targets and [h.tokens for h in beam] == targets

