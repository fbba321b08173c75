"""The Conformer audio-classifier family ("classifier"): pooling ignores padding, the loss
takes hard and soft targets, adapters are built from the config and round-trip through a
model directory, and ``speechfm.load(dir).classify / embed`` serve it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechfm
from speechfm.models.classifier import (
    ClassifierModelConfig,
    classifier_kws,
    classifier_tiny,
    create_classifier_model,
)
from speechfm.models.io import save_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["yes", "no", "up", "down"]


def _model(pooling="mean", adapters=(), seed=0):
    torch.manual_seed(seed)
    config = classifier_tiny(num_classes=len(LABELS))
    config.pooling = pooling
    config.adapters = list(adapters)
    model = create_classifier_model(config).eval()
    with torch.no_grad():  # scores far from uniform, adapters not at their zero start
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return config, model


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_pooling_ignores_padding(pooling):
    _, model = _model(pooling)
    long, short = torch.randn(1, 90, 80), torch.randn(1, 50, 80)
    batch = torch.zeros(2, 90, 80)
    batch[0], batch[1, :50] = long[0], short[0]
    batch[1, 50:] = 100.0  # padding garbage must not leak into the short clip
    with torch.no_grad():
        both = model.classify(batch, torch.tensor([90, 50]))
        alone = model.classify(short, torch.tensor([50]))
        emb = model.embedding(short, torch.tensor([50]))
    assert both.shape == (2, len(LABELS)) and emb.shape == (1, 32)
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)


def test_loss_hard_soft_and_empty():
    _, model = _model()
    feats, lens = torch.randn(3, 60, 80), torch.tensor([60, 40, 20])
    with torch.no_grad():
        logits = model.classify(feats, lens)
        loss, n, stats = model({"features": feats, "x_lens": lens, "targets": [0, 1, 3]})
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 3]), reduction="sum")
    torch.testing.assert_close(loss, expected)
    assert n == 3 and stats["correct"] == float((logits.argmax(-1) == torch.tensor([0, 1, 3])).sum())
    soft = torch.nn.functional.one_hot(torch.tensor([0, 1, 3]), 4).float()
    with torch.no_grad():
        soft_loss, _, _ = model({"features": feats, "x_lens": lens, "targets": soft})
    torch.testing.assert_close(soft_loss, expected)
    with pytest.raises(ValueError, match="soft targets"):
        model({"features": feats, "x_lens": lens, "targets": soft[:, :3]})
    zero, n0, _ = model({"features": feats[:0], "x_lens": lens[:0], "targets": []})
    assert n0 == 0 and float(zero) == 0.0


def test_config_validation():
    config = classifier_tiny(3)
    config.pooling = "max"
    with pytest.raises(ValueError, match="pooling"):
        config.validate()
    config = classifier_tiny(3)
    config.adapters = [{"name": "a", "kind": "bottleneck", "points": ["after_ffn"],
                        "options": {"bottleneck": 4}}]  # a transformer block's point
    with pytest.raises(ValueError, match=r"adapters\[0\]: points"):
        config.validate()
    assert classifier_kws(12).encoder.fbank.num_mel_bins == 64


def test_model_dir_round_trip_and_api(tmp_path):
    adapters = [{"name": "lora", "kind": "lora", "points": ["attn_q", "attn_v"],
                 "options": {"rank": 4, "alpha": 4.0}},
                {"name": "ad", "kind": "bottleneck", "points": ["after_ffn2"],
                 "options": {"bottleneck": 8}}]
    config, module = _model("attention", adapters)
    save_model_dir(tmp_path / "m", module, config, parts={"labels": LABELS})
    loaded = speechfm.load(tmp_path / "m")
    assert loaded.family == "classifier" and loaded.labels == LABELS
    assert isinstance(loaded.module.encoder, type(module.encoder))
    for (k1, v1), (k2, v2) in zip(module.state_dict().items(),
                                  loaded.module.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(12000)).astype(np.float32)
    top = loaded.classify((wav, 16000), top_k=3)
    feats, lens = module.encoder.fbank(torch.from_numpy(wav)[None])
    with torch.no_grad():
        probs = torch.softmax(module.classify(feats, lens)[0], -1)
        emb = module.embedding(feats, lens)[0]
    best = probs.argsort(descending=True)[:3]
    assert [label for label, _ in top] == [LABELS[i] for i in best]
    np.testing.assert_allclose([s for _, s in top], probs[best].numpy(), atol=1e-6)
    torch.testing.assert_close(loaded.embed((wav, 16000), pooled=True), emb, atol=1e-6, rtol=1e-6)
    assert ClassifierModelConfig.from_dict(config.to_dict()).adapters == adapters
