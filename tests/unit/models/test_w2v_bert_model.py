"""speechfm.models.w2v_bert: named sizes (checked on the meta device), the pretraining
forward (contract, gradients, masking, seeded validation draws), config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechfm.models.w2v_bert import (
    create_w2v_bert_model,
    w2v_bert_300m,
    w2v_bert_600m,
    w2v_bert_small,
    w2v_bert_tiny,
    w2v_bert_xl,
    w2v_bert_xxl,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("size", "layers", "contrastive", "low", "high"), [
    (w2v_bert_600m, 24, 8, 575e6, 585e6),   # facebook/w2v-bert-2.0's encoder: 580.5 M
    (w2v_bert_300m, 12, 4, 280e6, 300e6),
    (w2v_bert_xl, 24, 12, 0.55e9, 0.65e9),  # the paper's 0.6 B
    (w2v_bert_xxl, 42, 12, 0.95e9, 1.1e9),  # the paper's 1.0 B
])
def test_named_sizes_on_the_meta_device(size, layers, contrastive, low, high):
    config = size()
    assert config.encoder.conformer.num_layers == layers
    assert config.num_contrastive_layers == contrastive
    assert config.quantizer.num_entries == 1024 and config.num_negatives == 100
    assert config.masking.span == 10 and config.masking.mask_prob == 0.65
    with torch.device("meta"):
        model = create_w2v_bert_model(config)
    assert low <= _count(model.encoder) <= high


def _batch(lens=(200, 150, 90), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"features": torch.randn(len(lens), max(lens), 80, generator=g),
            "x_lens": torch.tensor(lens), "cut_ids": [f"u{i}" for i in range(len(lens))]}


def test_forward_follows_the_contract_and_every_parameter_learns():
    torch.manual_seed(0)
    model = create_w2v_bert_model(w2v_bert_tiny()).train()
    loss, count, stats = model(_batch(), step=0)
    assert torch.isfinite(loss) and count > 0
    assert set(stats) >= {"contrastive_loss", "mlm_loss", "contrastive_acc", "mlm_acc",
                          "code_perplexity", "prob_perplexity", "used_fraction", "temperature"}
    assert stats["temperature"] / count == pytest.approx(2.0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    # the temperature follows the schedule
    model(_batch(), step=1000)
    assert model.quantizer.temperature == pytest.approx(max(2.0 * 0.999995**1000, 0.1))


def test_masks_stay_inside_each_utterance_and_count_the_frames():
    torch.manual_seed(0)
    model = create_w2v_bert_model(w2v_bert_tiny()).eval()
    seen = {}
    original = model.quantizer.forward

    def spy(x, valid=None, **kw):
        seen["valid"] = valid
        return original(x, valid, **kw)

    model.quantizer.forward = spy
    batch = _batch((200, 60, 31))
    g = torch.Generator().manual_seed(1)
    _, count, _ = model(batch, generator=g)
    valid = seen["valid"]
    lens = valid.sum(1)
    assert lens.tolist() == model.encoder.output_lengths(batch["x_lens"]).tolist()
    # same generator seed -> same masks, negatives and loss (validation is repeatable and
    # leaves the global RNG alone)
    state = torch.get_rng_state()
    a = model(batch, generator=torch.Generator().manual_seed(5))
    b = model(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert a[0].item() == b[0].item() and a[1] == b[1]
    assert 0 < count < float(lens.sum())


def test_an_empty_batch_keeps_the_stats_keys():
    model = create_w2v_bert_model(w2v_bert_tiny())
    _, _, full = model(_batch(), step=0)
    loss, count, stats = model({"features": torch.zeros(0, 0, 80), "x_lens": torch.zeros(0),
                                "cut_ids": []}, step=0)
    assert count == 0 and loss.item() == 0.0 and set(stats) == set(full)


@pytest.mark.parametrize(("change", "message"), [
    ({"num_contrastive_layers": 3}, "num_contrastive_layers"),
    ({"num_contrastive_layers": 0}, "num_contrastive_layers"),
    ({"num_target_codebooks": 2}, "num_target_codebooks"),
    ({"contrastive_temperature": 0.0}, "contrastive_temperature"),
    ({"mlm_weight": -1.0}, "mlm_weight"),
])
def test_validation_names_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(w2v_bert_tiny(), **change).validate()
    w2v_bert_small().validate()
