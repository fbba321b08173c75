"""speechfm.losses.transducer: warm-up schedule, pruned vs full loss, gradients, checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechfm.errors import DataError
from speechfm.features.fbank import FbankConfig
from speechfm.losses.transducer import (
    TransducerLossConfig,
    check_transducer_batch,
    loss_scales,
    transducer_loss,
)
from speechfm.models.transducer import create_transducer_model, transducer_tiny
from speechfm.ops.rnnt_reference import rnnt_loss_reference

FEAT = 20
VOCAB = 7
CFG = TransducerLossConfig(backend="torch")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(dtype=torch.float64):
    base = transducer_tiny(VOCAB)
    encoder = dataclasses.replace(base.encoder, fbank=FbankConfig(num_mel_bins=FEAT),
                                  conformer=dataclasses.replace(base.encoder.conformer,
                                                                input_dim=FEAT))
    cfg = dataclasses.replace(base, encoder=encoder, context_size=2)
    torch.manual_seed(0)
    return create_transducer_model(cfg).to(dtype)


def _inputs(dtype=torch.float64, seed=0):
    """Encoder output of 3 ragged utterances (T = 9, 6, 8) and ragged targets (U = 4, 1, 0)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(3, 9, 32, generator=g, dtype=dtype)
    enc_lens = torch.tensor([9, 6, 8])
    targets = torch.tensor([[1, 2, 3, 6], [5, -1, -1, -1], [-1, -1, -1, -1]])
    y_lens = torch.tensor([4, 1, 0])
    return enc, enc_lens, targets, y_lens


def _loss(model, enc, enc_lens, targets, y_lens, config, step=0, **kw):
    return transducer_loss(
        enc,
        enc_lens,
        targets,
        y_lens,
        predictor=model.predictor,
        joiner=model.joiner,
        simple_am_proj=model.simple_am_proj,
        simple_lm_proj=model.simple_lm_proj,
        config=config,
        step=step,
        **kw,
    )


def test_loss_scales_schedule():
    cfg = TransducerLossConfig(warm_steps=2000, simple_loss_scale=0.5)
    assert loss_scales(0, cfg) == pytest.approx((1.0, 0.1))
    assert loss_scales(1000, cfg) == pytest.approx((0.75, 0.55))
    assert loss_scales(2000, cfg) == pytest.approx((0.5, 1.0))
    assert loss_scales(4000, cfg) == pytest.approx((0.5, 1.0))
    assert loss_scales(0, dataclasses.replace(cfg, warm_steps=0)) == (0.5, 1.0)
    with pytest.raises(ValueError, match="step"):
        loss_scales(-1, cfg)


def test_config_validation_and_round_trip():
    cfg = TransducerLossConfig(kind="full", prune_range=3, clamp=1.0)
    assert TransducerLossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TransducerLossConfig.from_dict({"prune": 3})
    for bad, field_name in (
        ({"kind": "ctc"}, "kind"),
        ({"prune_range": 1}, "prune_range"),
        ({"lm_scale": 0.8, "am_scale": 0.3}, "lm_scale"),
        ({"warm_steps": -1}, "warm_steps"),
        ({"backend": "cuda"}, "backend"),
    ):
        with pytest.raises(ValueError, match=field_name):
            TransducerLossConfig(**bad).validate()


def test_full_loss_matches_the_per_utterance_reference():
    """Batched (padded targets, ragged lengths) == each utterance alone through the
    brute-force float64 RNN-T reference: checks the blank-prefixed predictor input."""
    model = _model()
    enc, enc_lens, targets, y_lens = _inputs()
    out = _loss(model, enc, enc_lens, targets, y_lens, dataclasses.replace(CFG, kind="full"))
    assert out.simple is None and out.pruned is None and out.full.dtype == torch.float64
    for n in range(3):
        t, u = int(enc_lens[n]), int(y_lens[n])
        y = targets[n : n + 1, :u]
        pred = model.predictor(torch.cat((torch.zeros(1, 1, dtype=torch.long), y), dim=1))
        logits = model.joiner(enc[n : n + 1, :t, None], pred[:, None])
        ref = rnnt_loss_reference(logits, y, torch.tensor([t]), torch.tensor([u]))
        torch.testing.assert_close(out.full[n], ref.reshape(()), rtol=1e-10, atol=1e-10)


def test_pruned_equals_full_when_nothing_is_pruned():
    model = _model()
    enc, enc_lens, targets, y_lens = _inputs()
    full = _loss(model, enc, enc_lens, targets, y_lens, dataclasses.replace(CFG, kind="full"))
    for prune_range in (5, 8):  # U + 1 = 5: every position kept
        out = _loss(
            model, enc, enc_lens, targets, y_lens, dataclasses.replace(CFG, prune_range=prune_range)
        )
        torch.testing.assert_close(out.pruned, full.full, rtol=1e-10, atol=1e-10)
    narrow = _loss(model, enc, enc_lens, targets, y_lens, dataclasses.replace(CFG, prune_range=2))
    # A narrower band drops paths: the pruned loss can only be larger.
    assert bool((narrow.pruned >= full.full - 1e-9).all())
    assert float(narrow.pruned[0]) > float(full.full[0]) + 1e-6


def test_weights_follow_the_schedule():
    model = _model()
    enc, enc_lens, targets, y_lens = _inputs()
    cfg = dataclasses.replace(CFG, warm_steps=100)
    for step in (0, 50, 100, 300):
        out = _loss(model, enc, enc_lens, targets, y_lens, cfg, step=step)
        s, p = loss_scales(step, cfg)
        assert (out.simple_scale, out.pruned_scale) == (s, p)
        torch.testing.assert_close(out.loss, (s * out.simple + p * out.pruned).sum())


def test_gradients_reach_every_part():
    model = _model(torch.float32)
    enc_in = torch.randn(3, 40, FEAT, generator=torch.Generator().manual_seed(4))
    x_lens = torch.tensor([40, 32, 36])
    targets = [[1, 2, 3], [4], [5, 6]]
    for kind in ("pruned", "full"):
        model.zero_grad()
        loss, _ = model.compute_loss(
            enc_in, x_lens, targets, step=0, loss_config=dataclasses.replace(CFG, kind=kind)
        )
        loss.backward()
        skipped = ("simple_",) if kind == "full" else ()
        for name, p in model.named_parameters():
            if name.startswith(skipped):
                assert p.grad is None, name
                continue
            assert p.grad is not None and torch.isfinite(p.grad).all(), (kind, name)
            assert p.grad.abs().sum() > 0, (kind, name)


def test_batch_checks_name_the_utterance():
    enc_lens = torch.tensor([5, 0])
    targets = torch.tensor([[1, 2], [3, 0]])
    ids = ["u1", "u2"]
    kw = {"num_frames": 5, "vocab_size": VOCAB, "utt_ids": ids}
    with pytest.raises(DataError, match="utterance 'u2' has 0 encoder frames"):
        check_transducer_batch(enc_lens, targets, torch.tensor([2, 1]), **kw)
    with pytest.raises(DataError, match="utterance 'u2'.*blank"):
        check_transducer_batch(torch.tensor([5, 4]), targets, torch.tensor([2, 2]), **kw)
    with pytest.raises(DataError, match="utterance 'u1': y_lens 3"):
        check_transducer_batch(torch.tensor([5, 4]), targets, torch.tensor([3, 1]), **kw)
    with pytest.raises(DataError, match="utterance 'u1': enc_lens 6"):
        check_transducer_batch(torch.tensor([6, 4]), targets, torch.tensor([2, 1]), **kw)
    with pytest.raises(DataError, match="utterance 1 of the batch has 0"):
        check_transducer_batch(
            enc_lens, targets, torch.tensor([2, 1]), num_frames=5, vocab_size=VOCAB
        )
    check_transducer_batch(torch.tensor([5, 4]), targets, torch.tensor([2, 1]), **kw)
