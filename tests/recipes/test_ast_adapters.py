"""recipes/ast_adapters: every PETL method builds, counts and freezes as documented; a short
real run on FSDD digits beats chance on speakers it never heard; export -> classify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
METHOD_ARGS = {
    "full": {}, "linear": {}, "bitfit": {},
    "adapter": {"adapter_placement": "houlsby", "adapter_mode": "parallel"},
    "conv_adapter": {"adapter_placement": "pfeiffer", "adapter_mode": "sequential"},
    "lora": {}, "prompt": {}, "prefix": {},
}


def _config(recipe, method: str, **kw):
    mod = recipe("ast_adapters")
    return mod, mod.AstAdaptersConfig(train_cuts="x", model_size="ast_mini", method=method,
                                      max_steps=200, **METHOD_ARGS[method], **kw)


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_trainable_parameters_per_method(recipe, method):
    from speechfm.models.ast import create_ast_model

    mod, config = _config(recipe, method, num_prompts=5, reduction_rate=4)
    config.validate()
    assert config.optimizer.lr == mod.DEFAULT_LR[method]
    mc = mod.build_model_config(config, num_classes=4)
    mc.adapters = mod.method_adapters(config, mc.dim)
    model = create_ast_model(mc)
    counts = mod.set_trainable(model, method)
    dim, layers, head = 32, 2, 2 * 32 + 32 * 4 + 4
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    bottleneck = 8  # max(adapter_min_bottleneck 8, 32 // 4)
    expected = {
        "full": counts["total_parameters"],
        "linear": head,
        "bitfit": biases + 32 + 32 * 4,  # every bias, plus the head's two weights
        "adapter": head + layers * 2 * (2 * dim + dim * bottleneck + bottleneck
                                        + bottleneck * dim + dim),
        "conv_adapter": head + layers * (2 * dim + dim * 2 * bottleneck + 2 * bottleneck
                                         + bottleneck * 31 + bottleneck + 2 * bottleneck
                                         + bottleneck * dim + dim),
        "lora": head + layers * 2 * 2 * 8 * dim,
        "prompt": head + layers * 5 * dim,
        "prefix": head + layers * 2 * 5 * dim,
    }[method]
    assert counts["trainable_parameters"] == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method != "full":
        assert all(n.startswith("head.") or ".adapters." in n or n.endswith(".bias")
                   for n in trainable)


def test_augment_is_deterministic_and_mixes_targets(recipe):
    mod = recipe("ast_adapters")
    feats = torch.randn(4, 10, 3)
    lens = torch.tensor([10, 8, 10, 6])

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return mod.augment(feats, lens, [0, 1, 2, 1], 3, g, mixup=0.5, time_shift=3)

    a, b = run(1), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    f, new_lens, soft = a
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(-1), torch.ones(4))
    assert bool((soft.max(-1).values >= 0.5).all())
    assert bool((new_lens >= lens).all())
    g = torch.Generator().manual_seed(0)
    shifted, same_lens, hard = mod.augment(feats, lens, [0, 1, 2, 1], 3, g, mixup=0.0,
                                           time_shift=3)
    assert hard == [0, 1, 2, 1] and torch.equal(same_lens, lens)
    for i, n in enumerate(lens.tolist()):  # a circular shift keeps each clip's frames
        assert torch.allclose(shifted[i, :n].sum(0), feats[i, :n].sum(0), atol=1e-5)


@pytest.mark.slow
def test_short_run_beats_chance_on_held_out_speakers(recipe, tmp_path):
    if not (SHARED / "fsdd" / "recordings").is_dir():
        pytest.skip(f"needs the shared FSDD recordings under {SHARED}")
    import speechfm
    from speechfm.data.corpora.fsdd import prepare_fsdd_classification
    from speechfm.data.subsets import few_shot

    splits = prepare_fsdd_classification(
        SHARED / "fsdd" / "recordings", tmp_path / "fsdd", task="digit",
        dev_speakers=("nicolas",), test_speakers=("theo",))
    train = few_shot(splits["train"], 12, seed=0)  # 120 clips of 3 speakers
    train.to_file(tmp_path / "train.jsonl.gz")
    test = few_shot(splits["test"], 5, seed=0)  # 50 clips of a speaker never heard
    test.to_file(tmp_path / "test.jsonl.gz")
    mod = recipe("ast_adapters")
    config = mod.AstAdaptersConfig(
        train_cuts=str(tmp_path / "train.jsonl.gz"), dev_cuts=str(tmp_path / "test.jsonl.gz"),
        model_size="ast_mini", model={"dim": 64, "mlp_dim": 128, "target_frames": 80},
        method="full", lr=3e-3, max_steps=150, max_duration=20, valid_every=150,
        save_every=150, num_workers=0, progress=False, exp_dir=str(tmp_path / "exp"),
        time_shift=5)
    final = mod.train(config).final_dir
    summary = json.loads((tmp_path / "exp" / "train_summary.json").read_text())
    assert summary["trainable_parameters"] == summary["total_parameters"]
    model = speechfm.load(final)
    assert model.labels == sorted({c.supervisions[0].text for c in train})
    from speechfm.decode.classification import classify_manifest

    results = classify_manifest(model.module, test, model.labels, tmp_path / "scored")
    assert results["num_utts"] == 50
    assert results["accuracy"] > 25.0, results  # chance is 10 %
    clip = next(iter(test))
    top = model.classify((clip.load_audio()[0], clip.sampling_rate), top_k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_conformer_classifier_methods(recipe, method):
    """The same methods on the Conformer classifier: they build at the Conformer block's
    points, train only the head plus their own parameters, and (adapters, LoRA start at
    zero) leave the model's outputs unchanged at the start."""
    from speechfm.models.classifier import create_classifier_model

    mod = recipe("ast_adapters")
    config = mod.AstAdaptersConfig(train_cuts="x", model_size="classifier_tiny", method=method,
                                   max_steps=200, num_prompts=3, **METHOD_ARGS[method])
    config.validate()
    mc = mod.build_model_config(config, num_classes=4)
    assert mc.family == "classifier"
    dim, layers, head = 32, 2, 2 * 32 + 32 * 4 + 4
    torch.manual_seed(0)
    plain = create_classifier_model(mc).eval()
    mc.adapters = mod.method_adapters(config, dim, "classifier")
    model = create_classifier_model(mc).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".adapters." in k for k in missing)
    counts = mod.set_trainable(model, method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method == "full":
        assert counts["trainable_parameters"] == counts["total_parameters"]
    else:
        assert all(n.startswith("head.") or ".adapters." in n or n.endswith(".bias")
                   for n in trainable)
        assert counts["trainable_parameters"] > head if method != "linear" else (
            counts["trainable_parameters"] == head)
    if method == "adapter":  # Houlsby parallel: one parallel point per block
        assert [a["points"] for a in mc.adapters] == [["parallel"]]
    if method == "lora":
        assert counts["trainable_parameters"] == head + layers * 2 * 2 * 8 * dim
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 45])
    if method in ("adapter", "conv_adapter", "lora"):
        with torch.no_grad():
            torch.testing.assert_close(model.classify(feats, lens), plain.classify(feats, lens))


def test_conformer_backbone_from_an_asr_model(recipe, tmp_path):
    """A CTC model directory starts the Conformer classifier: its encoder config is taken
    and every encoder.* weight copied; an ASR head is not."""
    from speechfm.models.classifier import create_classifier_model
    from speechfm.models.ctc import create_ctc_model
    from speechfm.models.ctc.config import ctc_tiny
    from speechfm.models.io import save_model_dir

    torch.manual_seed(1)
    ctc_config = ctc_tiny(vocab_size=7)
    ctc = create_ctc_model(ctc_config)
    save_model_dir(tmp_path / "ctc", ctc, ctc_config)
    mod = recipe("ast_adapters")
    config = mod.AstAdaptersConfig(train_cuts="x", backbone=str(tmp_path / "ctc"),
                                   method="lora", max_steps=200,
                                   model={"pooling": "attention"})
    config.validate()
    mc = mod.build_model_config(config, num_classes=3)
    assert mc.family == "classifier" and mc.pooling == "attention"
    assert mc.encoder == ctc_config.encoder
    model = create_classifier_model(mc)
    copied = mod.load_backbone(model, str(tmp_path / "ctc"))
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert copied == len(ours) > 0
    theirs = ctc.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())
    from speechfm.errors import DataError

    with pytest.raises(DataError, match="no encoder to start from"):
        mod.backbone_config(str(_lm_like_dir(tmp_path)))


def _lm_like_dir(tmp_path):
    """A model directory of a family without a speech encoder to reuse (an asit model
    without its backbone entry is the nearest stand-in: its config lacks one)."""
    d = tmp_path / "other"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"family": "asit", "format_version": 2,
                                               "model": {}}))
    return d
