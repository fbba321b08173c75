"""recipes/asit end to end on a tiny tone corpus (labels unused): a real run of the
asit_mini model logs every loss term and schedule, exports an ``asit`` model directory that
speechfm.load embeds with and that an ``ast`` classifier starts from (init_from), and a
run stopped half way continues exactly with --resume (the EMA teacher included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

import speechfm
from speechfm.config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(cuts, exp, **kw):
    settings = dict(train_cuts=str(cuts), dev_cuts=str(cuts), model_size="asit_mini",
                    max_duration=3.0, num_workers=0, max_steps=4, save_every=2, valid_every=2,
                    log_every=1, keep_last=3, average_last=2, average_period=1,
                    progress=False, num_threads=1, exp_dir=str(exp), seed=3,
                    optimizer={"lr": 1e-3}, scheduler={"kind": "cosine", "warmup_steps": 1},
                    model={"loss": {"teacher_temperature_warmup_steps": 4}})
    settings.update(kw)
    return settings


def test_pretraining_logs_exports_embeds_and_starts_an_ast_classifier(recipe, tone_corpus,
                                                                      tmp_path):
    from safetensors.torch import load_file

    from speechfm.models.ast import ast_mini, create_ast_model
    from speechfm.models.io import init_weights
    from speechfm.train import read_scalars

    cuts, _ = tone_corpus
    module = recipe("asit")
    config = config_from_dict(module.AsitConfig, _settings(cuts, tmp_path / "asit"))
    result = module.train(config)
    assert result.summary["family"] == "asit" and result.summary["steps"] == 4
    curves = {k: [v for _, v in vals] for k, vals in read_scalars(tmp_path / "asit").items()}
    for tag in ("train/loss", "train/global_loss", "train/local_loss", "train/recon_loss",
                "train/teacher_temperature", "train/teacher_momentum", "train/mask_fraction",
                "train/masked_patches", "train/teacher_entropy", "valid/loss",
                "valid/recon_loss"):
        assert tag in curves and all(math.isfinite(v) for v in curves[tag]), tag
    temps = curves["train/teacher_temperature"]
    assert temps[0] == pytest.approx(0.04) and temps[-1] == pytest.approx(0.0625)
    momenta = curves["train/teacher_momentum"]
    assert momenta[0] == pytest.approx(0.996) and momenta == sorted(momenta)
    assert all(0.45 < f < 0.8 for f in curves["train/mask_fraction"])

    final = result.final_dir
    model = speechfm.load(final)
    assert model.family == "asit"
    audio = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    first, last = model.embed(audio, sample_rate=16000, layers=(1, -1))
    assert first.shape == last.shape == (6, 32)  # 3 x 2 patches of the 40-frame input

    # fine-tuning: an ast classifier of the same backbone starts from the export
    exported = load_file(str(final / "model.safetensors"))
    torch.manual_seed(0)
    classifier = create_ast_model(ast_mini(num_classes=3))
    head_before = classifier.head[1].weight.detach().clone()
    copied = init_weights(classifier, final, ("encoder.",))
    own = classifier.state_dict()
    assert set(copied) == {k for k in own if k.startswith("encoder.")}
    for key in copied:
        assert torch.equal(own[key], exported[key]), key
    assert torch.equal(classifier.head[1].weight, head_before)


def test_a_stopped_run_resumes_exactly_teacher_included(recipe, tone_corpus, tmp_path):
    from safetensors.torch import load_file

    cuts, _ = tone_corpus
    module = recipe("asit")
    kw = dict(dev_cuts=None, average="last")
    module.train(config_from_dict(module.AsitConfig, _settings(cuts, tmp_path / "straight", **kw)))
    # the command line: two updates, then --resume to four (same schedule budget)
    conf = tmp_path / "asit.yaml"
    conf.write_text(yaml.safe_dump(_settings(cuts, tmp_path / "split", **kw)))
    assert module.main([str(conf), "max_steps=2", "teacher_momentum_steps=4",
                        "scheduler.total_steps=4"]) == 0
    assert module.main([str(conf), "--resume"]) == 0

    for name in ("step-000004",):
        a_dir = tmp_path / "straight" / "checkpoints" / name
        b_dir = tmp_path / "split" / "checkpoints" / name
        a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
        ta = torch.load(a_dir / "training_state.pt", weights_only=True)["stateful"]["teacher"]
        tb = torch.load(b_dir / "training_state.pt", weights_only=True)["stateful"]["teacher"]
        assert ta["step"] == tb["step"] == 3  # the teacher follows before each forward
        for key, value in ta["ema"]["shadow"].items():
            assert torch.equal(value, tb["ema"]["shadow"][key]), key


def test_the_configs_parse_and_the_ablations_differ_in_loss_weights_only(recipe, repo_root,
                                                                         capsys):
    module = recipe("asit")
    resolved = {}
    for name in ("kws", "ablation_recon", "ablation_recon_local"):
        path = repo_root / "recipes" / "asit" / "configs" / f"{name}.yaml"
        assert module.main([str(path), "--print-config"]) == 0
        resolved[name] = yaml.safe_load(capsys.readouterr().out)
        model = module.build_model_config(config_from_dict(module.AsitConfig, resolved[name]))
        assert model.backbone.target_frames == 100 and model.backbone.grid == (9, 12)

    def without_weights(config):
        config = dict(config, exp_dir=None)
        loss = dict(config["model"]["loss"], global_weight=None, local_weight=None)
        return dict(config, model=dict(config["model"], loss=loss))

    base = resolved["kws"]
    assert base["model_size"] == "asit_tiny" and base["max_steps"] == 800
    for name, weights in (("ablation_recon", (0.0, 0.0, 2.0)),
                          ("ablation_recon_local", (0.0, 1.0, 2.0))):
        loss = resolved[name]["model"]["loss"]
        assert (loss["global_weight"], loss["local_weight"], loss["recon_weight"]) == weights
        assert without_weights(resolved[name]) == without_weights(base)
