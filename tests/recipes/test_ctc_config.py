"""A recipe's config (recipes/ctc CtcConfig = RunConfig + its own fields) through the typed
YAML engine of speechfm.config: loading, key=value overrides, validation errors, model
building, the model directory's config.json."""

from __future__ import annotations

import textwrap

import pytest

from speechfm.config import apply_overrides, config_from_dict, load_config
from speechfm.errors import DataError
from speechfm.models.io import model_dir_config
from speechfm.train.runner import HashedSpeedPerturb


@pytest.fixture(scope="module")
def ctc(recipe):
    return recipe("ctc")


YAML = """
train_cuts: data/fbank/cuts_train.jsonl.gz
dev_cuts: data/fbank/cuts_dev.jsonl.gz
tokenizer: data/lang_char
max_duration: 60
speed_factors: [0.9, 1.0, 1.1]
model_size: ctc_tiny
model:
  encoder:
    specaugment: false
    conformer:
      dim: 48
      num_layers: 3
optimizer:
  lr: 1e-3          # YAML 1.1 reads this as a string; it must become a float
  betas: [0.9, 0.99]
scheduler:
  kind: cosine
  warmup_steps: 10
max_steps: 100
"""


def _write(tmp_path, text=YAML):
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_sections_become_typed_fields(tmp_path, ctc):
    cfg = load_config(ctc.CtcConfig, _write(tmp_path))
    assert cfg.optimizer.lr == pytest.approx(1e-3) and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.betas == (0.9, 0.99)
    assert cfg.speed_factors == (0.9, 1.0, 1.1)
    assert cfg.scheduler.kind == "cosine" and cfg.scheduler.warmup_steps == 10
    assert cfg.max_duration == 60.0 and isinstance(cfg.max_duration, float)
    model = ctc.build_model_config(cfg, vocab_size=30)
    conformer = model.encoder.conformer
    assert (conformer.dim, conformer.num_layers, model.vocab_size) == (48, 3, 30)
    assert model.encoder.specaugment is False
    # untouched fields keep the named size's values
    assert conformer.num_heads == 4


def test_overrides_reach_nested_fields_and_exp_dir(tmp_path, ctc):
    cfg = load_config(
        ctc.CtcConfig, _write(tmp_path),
        ["optimizer.lr=3e-4", "model.encoder.conformer.num_layers=1", "max_steps=7", "speed_perturb=true",
         "dev_cuts=null", "scheduler.kind=noam", "model.head_dropout=0.2"],
        exp_dir=str(tmp_path / "exp"),
    )
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.max_steps == 7 and cfg.speed_perturb is True and cfg.dev_cuts is None
    assert cfg.exp_dir == str(tmp_path / "exp")
    model = ctc.build_model_config(cfg, vocab_size=10)
    assert model.encoder.conformer.num_layers == 1 and model.encoder.conformer.dim == 48
    assert model.head_dropout == pytest.approx(0.2)


def test_to_dict_round_trips(tmp_path, ctc):
    cfg = load_config(ctc.CtcConfig, _write(tmp_path), ["num_epochs=3", "max_minutes=1.5"])
    again = config_from_dict(ctc.CtcConfig, cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["max_stepz=5"], "max_stepz"),
        (["model.encoder.conformer.dimm=5"], "model.encoder.conformer.dimm"),
        (["max_steps=abc"], "max_steps"),
        (["optimizer.lr=-1"], "lr must be > 0"),
        (["model.encoder.conformer.num_heads=5"], "divisible"),
        (["model.encoder.normalization=cepstral"], "normalization"),
        (["early_stopping_patience=0"], "early_stopping_patience"),
        (["encoder_from_init=true"], "needs init_from"),
        (["encoder_from_init=true", "init_from=/nonexistent"], "config.json is missing"),
        (["model.vocab_size=50"], "tokenizer"),
        (["model_size=ctc_huge"], "ctc_huge"),
        (["targets=phones"], "targets"),
        (["max_steps=null", "scheduler.kind=cosine"], "budget"),
        (["max_steps=null", "max_minutes=5"], "needs a length"),
        (["optimizer.betas=[0.9]"], "optimizer.betas"),
        (["speed_perturb=maybe"], "speed_perturb"),
        (["keep_last=0"], "keep_last"),
        (["average=median"], "average"),
        (["volume_perturb_db=-3"], "volume_perturb_db"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, overrides, message, ctc):
    with pytest.raises(ValueError, match=message):
        load_config(ctc.CtcConfig, _write(tmp_path), overrides)


def test_missing_required_key_and_bad_files(tmp_path, ctc):
    with pytest.raises(ValueError, match="train_cuts"):
        load_config(ctc.CtcConfig, _write(tmp_path, "tokenizer: x\nmax_steps: 3\n"))
    with pytest.raises(DataError, match="mapping"):
        load_config(ctc.CtcConfig, _write(tmp_path, "- a\n- b\n"))
    with pytest.raises(DataError, match="missing.yaml"):
        load_config(ctc.CtcConfig, tmp_path / "missing.yaml")


def test_apply_overrides_rejects_malformed_items():
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["max_steps"])
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"max_steps": 3}, ["max_steps.x=1"])
    out = apply_overrides({"model": {"encoder": {"dim": 8}}}, ["model.encoder.dim=16", "a.b=[1, 2]"])
    assert out == {"model": {"encoder": {"dim": 16}}, "a": {"b": [1, 2]}}


def test_model_dir_config_layout(tmp_path, ctc):
    cfg = load_config(ctc.CtcConfig, _write(tmp_path))
    model = ctc.build_model_config(cfg, vocab_size=12)
    data = model_dir_config(model, parts=["tokenizer"])
    assert set(data) == {"format_version", "family", "model", "parts", "sample_rate",
                         "frame_shift_s", "speechfm_version"}
    assert data["family"] == "ctc" and data["parts"] == {"tokenizer": "tokenizer"}
    assert data["frame_shift_s"] == pytest.approx(0.04) and data["sample_rate"] == 16000
    assert data["model"]["encoder"]["conformer"]["dim"] == 48 and data["model"]["vocab_size"] == 12


def test_hashed_speed_perturb_is_a_function_of_seed_epoch_and_id():
    a, b = HashedSpeedPerturb((0.9, 1.0, 1.1), seed=1), HashedSpeedPerturb((0.9, 1.0, 1.1), seed=1)
    ids = [f"utt{i}" for i in range(200)]
    assert [a.factor(i) for i in ids] == [b.factor(i) for i in ids]
    assert {a.factor(i) for i in ids} == {0.9, 1.0, 1.1}
    b.epoch = 1
    assert [a.factor(i) for i in ids] != [b.factor(i) for i in ids]
