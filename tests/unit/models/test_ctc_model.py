"""speechfm.models.ctc: config round trip, forward shapes, CMVN buffers, loss, memorisation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechfm.decode import ctc_greedy_search, ctc_prefix_beam_search
from speechfm.features.fbank import FbankConfig
from speechfm.losses import pad_targets
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


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CPU lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**overrides) -> CtcModelConfig:
    """ctc_tiny on 20-dim fbank (small and fast)."""
    base = ctc_tiny(VOCAB)
    cfg = dataclasses.replace(
        base,
        fbank=FbankConfig(num_mel_bins=FEAT),
        encoder=dataclasses.replace(base.encoder, input_dim=FEAT),
    )
    return dataclasses.replace(cfg, **overrides)


def _model(**overrides) -> CtcModel:
    torch.manual_seed(0)
    return create_ctc_model(_config(**overrides))


def _batch(lens=(48, 40, 44), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lens), max(lens), FEAT, generator=g), torch.tensor(lens)


# ------------------------------------------------------------------------------ config


def test_config_round_trip_through_json():
    cfg = _config(use_cmvn=False, specaug_time_warp=3, head_dropout=0.2)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["family"] == "ctc"
    assert data["encoder"]["dim"] == cfg.encoder.dim and data["fbank"]["num_mel_bins"] == FEAT
    back = CtcModelConfig.from_dict(data)
    assert back == cfg
    assert back.frame_shift_s == pytest.approx(0.04)


def test_config_errors():
    data = _config().to_dict()
    with pytest.raises(ValueError, match="unknown CtcModelConfig fields"):
        CtcModelConfig.from_dict({**data, "vocab": 3})
    with pytest.raises(ValueError, match="family"):
        CtcModelConfig.from_dict({**data, "family": "transducer"})
    with pytest.raises(ValueError, match="input_dim"):
        dataclasses.replace(_config(), fbank=FbankConfig(num_mel_bins=40)).validate()
    with pytest.raises(ValueError, match="vocab_size"):
        _config(vocab_size=1).validate()
    with pytest.raises(ValueError, match="head_dropout"):
        _config(head_dropout=1.0).validate()
    with pytest.raises(ValueError, match="specaug_freq_mask_width"):
        _config(specaug_freq_mask_width=-1).validate()


def test_named_sizes_validate():
    for size in (ctc_tiny, ctc_small, ctc_base, ctc_large):
        cfg = size(500)
        cfg.validate()
        assert cfg.vocab_size == 500 and cfg.encoder.input_dim == cfg.fbank.feature_dim
    assert ctc_small(500).encoder.dim < ctc_base(500).encoder.dim < ctc_large(500).encoder.dim


# ------------------------------------------------------------------------------ forward


def test_forward_shapes_and_lengths():
    model = _model().eval()
    feats, lens = _batch()
    log_probs, out_lens = model(feats, lens)
    assert out_lens.tolist() == model.output_lengths(lens).tolist()
    assert log_probs.shape == (3, int(out_lens.max()), VOCAB)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))
    # padding does not change an utterance's output
    alone, alone_lens = model(feats[1:2, : lens[1]], lens[1:2])
    torch.testing.assert_close(alone[0, : alone_lens[0]], log_probs[1, : out_lens[1]])
    enc, enc_lens, layers = model.encode(feats, lens, return_layers=[0, -1])
    assert enc.shape == (3, log_probs.shape[1], model.encoder.dim) and len(layers) == 2
    assert enc_lens.tolist() == out_lens.tolist()


def test_log_softmax_stays_float32_under_bf16_autocast():
    model = _model().eval()
    feats, lens = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _ = model(feats, lens)
    assert log_probs.dtype == torch.float32 and torch.isfinite(log_probs).all()


def test_specaugment_only_in_training():
    model = _model(specaugment=True, specaug_freq_mask_width=8)
    feats, lens = _batch()
    model.eval()
    a, _ = model(feats, lens)
    b, _ = model(feats, lens)
    torch.testing.assert_close(a, b)
    model.train()  # tiny has no dropout: only SpecAugment can make a difference
    torch.manual_seed(3)
    c, _ = model(feats, lens)
    assert not torch.allclose(a, c)
    no_aug = _model(specaugment=False).train()
    d, _ = no_aug(feats, lens)
    torch.testing.assert_close(a, d)


def test_forward_waveforms_is_fbank_then_forward():
    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    wavs = 0.1 * torch.randn(2, 8000, generator=g)
    lens = torch.tensor([8000, 5600])
    log_probs, out_lens = model.forward_waveforms(wavs, lens)
    feats, feat_lens = model.feature_extractor()(wavs, lens)
    assert feats.shape[-1] == FEAT
    ref, ref_lens = model(feats, feat_lens)
    torch.testing.assert_close(log_probs, ref)
    assert out_lens.tolist() == ref_lens.tolist()
    with pytest.raises(ValueError, match="8000 Hz"):
        model.forward_waveforms(wavs, lens, sample_rate=8000)
    assert model.frame_shift_s == pytest.approx(0.04) and model.sample_rate == 16000


# --------------------------------------------------------------------------------- CMVN


def test_cmvn_buffers_are_saved_and_applied(tmp_path):
    model = _model().eval()
    assert {"cmvn.mean", "cmvn.var", "cmvn.inv_std"} <= set(model.state_dict())
    feats, lens = _batch()
    mean = torch.linspace(-2.0, 2.0, FEAT)
    var = torch.linspace(0.5, 4.0, FEAT)
    before, _ = model(feats, lens)
    model.set_cmvn(mean, var)
    after, _ = model(feats, lens)
    assert not torch.allclose(before, after)

    # Same weights without CMVN, fed normalised features, give the same output.
    plain = _model(use_cmvn=False).eval()
    assert not any(k.startswith("cmvn.") for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "cmvn" not in k})
    valid = (torch.arange(feats.shape[1])[None, :] < lens[:, None]).unsqueeze(-1)
    normed = ((feats - mean) / var.sqrt()).masked_fill(~valid, 0.0)
    ref, _ = plain(normed, lens)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)

    # The checkpoint alone restores the statistics.
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = _model().eval()
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    torch.testing.assert_close(fresh.cmvn.mean, mean.double())
    restored, _ = fresh(feats, lens)
    torch.testing.assert_close(restored, after)

    with pytest.raises(ValueError, match="use_cmvn=False"):
        plain.set_cmvn(mean, var)
    with pytest.raises(ValueError, match=r"\(20,\)"):
        model.set_cmvn(mean[:5], var[:5])
    with pytest.raises(ValueError, match="non-negative"):
        model.set_cmvn(mean, -var)


# --------------------------------------------------------------------------------- loss


def test_compute_loss_targets_forms_and_stats():
    model = _model().eval()
    feats, lens = _batch()
    targets = [[1, 2, 3], [4, 4], [5]]
    loss, stats = model.compute_loss(feats, lens, targets)
    padded, y_lens = pad_targets(targets, pad_value=-1)
    loss2, stats2 = model.compute_loss(feats, lens, padded, y_lens)
    torch.testing.assert_close(loss, loss2)
    assert stats == stats2
    assert stats["num_utts"] == 3 and stats["num_infinite"] == 0
    assert stats["num_tokens"] == 6 and stats["num_input_frames"] == float(lens.sum())
    assert stats["num_frames"] == float(model.output_lengths(lens).sum())
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="y_lens is required"):
        model.compute_loss(feats, lens, padded)


def test_compute_loss_reports_infeasible_utterances():
    model = _model().train()
    feats, lens = _batch()
    frames = model.output_lengths(lens).tolist()  # [11, 9, 10]
    targets = [[1, 2], [3] * (frames[1] + 1), [4, 5]]
    loss, stats = model.compute_loss(feats, lens, targets, utt_ids=["a", "b", "c"])
    assert stats["num_infinite"] == 1 and stats["num_utts"] == 2
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    strict, _ = model.compute_loss(feats, lens, targets, zero_infinity=False)
    assert torch.isinf(strict)
    with pytest.raises(ValueError, match="utterance 'b'.*blank"):
        model.compute_loss(feats, lens, [[1], [0, 2], [3]], utt_ids=["a", "b", "c"])


def test_memorises_a_tiny_task():
    """5 random "utterances" learnt to zero greedy errors within 100 Adam steps."""
    model = _model(specaugment=False)
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([48, 40, 44, 36, 48])
    feats = torch.randn(5, 48, FEAT, generator=g)
    sizes = torch.randint(2, 6, (5,), generator=g).tolist()
    targets = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in sizes]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        model.train()
        loss, stats = model.compute_loss(feats, lens, targets)
        opt.zero_grad()
        (loss / stats["num_utts"]).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert sum(losses[-10:]) < sum(losses[:10])
    model.eval()
    with torch.no_grad():
        log_probs, out_lens = model(feats, lens)
    assert ctc_greedy_search(log_probs, out_lens) == targets
    beams = ctc_prefix_beam_search(log_probs, out_lens, beam=4)
    assert [b[0].tokens for b in beams] == targets
