"""recipes/ctc end to end on a tiny synthetic corpus: train a few steps, export, resume
exactly, load through speechfm.load, decode and score (layout, resume state, errs files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import speechfm
from speechfm.decode.asr import _for_unit, decode_manifest, format_results_table, load_asr_model
from speechfm.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctc(recipe):
    return recipe("ctc")


def train_asr(config, resume=False):
    from recipe_loader import import_recipe

    return import_recipe("ctc").train(config, resume=resume).final_dir


def _config(corpus, exp, **kw):
    _, cuts, tok = corpus
    base = dict(
        train_cuts=str(cuts), dev_cuts=str(cuts), tokenizer=str(tok), model_size="ctc_tiny",
        max_duration=3.0, num_workers=0, max_steps=6, save_every=2, valid_every=3,
        keep_last=3, average_last=2, average_period=1, progress=False, exp_dir=str(exp),
        scheduler={"kind": "constant", "warmup_steps": 0},
    )
    base.update(kw)
    from recipe_loader import import_recipe

    from speechfm.config import config_from_dict

    return config_from_dict(import_recipe("ctc").CtcConfig, base)


def test_train_exports_model_dir_and_decode_scores_per_language(corpus, corpus_texts, tmp_path):
    TEXTS = corpus_texts
    exp = tmp_path / "exp"
    final = train_asr(_config(corpus, exp))
    assert final == exp / "final"
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    config = json.loads((final / "config.json").read_text())
    assert config["family"] == "ctc" and config["parts"] == {"tokenizer": "tokenizer"}
    assert config["model"]["vocab_size"] == 5  # blank, unk, word boundary, a, b
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["stop_reason"] == "max_steps"
    assert summary["train_data"]["utterances"] == 6
    assert set(summary["average"]["candidates"]) == {"last", "checkpoints", "model_avg"}
    assert summary["average"]["chosen"] in summary["average"]["candidates"]
    assert [p.name for p in sorted((exp / "checkpoints").glob("step-*"))] == [
        "step-000002", "step-000004", "step-000006"]
    assert (exp / "curves.png").is_file()

    model, tokenizer, _ = load_asr_model(final)
    assert not model.training and tokenizer.kind == "char"
    # the exported directory is what speechfm.load opens: transcribe and embed
    loaded = speechfm.load(final)
    wav = corpus[0] / "en_0.wav"
    assert isinstance(loaded.transcribe(wav), str)
    assert loaded.embed(wav, layers=(-1,))[0].shape[1] == model.encoder.dim

    out = tmp_path / "decode"
    results = decode_manifest(final, corpus[1], out, method="beam", beam=3)
    hyps = (out / "hyps.txt").read_text().splitlines()
    assert sorted(line.split(" ", 1)[0] for line in hyps) == sorted(
        f"{lang}_{i}" for lang, ts in TEXTS.items() for i in range(len(ts)))
    for group in ("all", "en", "fr"):
        for rate in ("cer", "wer"):
            assert f"%{rate.upper()} = " in (out / f"errs-{group}-{rate}.txt").read_text()
    # the denominators are the references' characters (spaces excluded) and words
    chars = sum(len(t.replace(" ", "")) for ts in TEXTS.values() for t in ts)
    words = sum(len(t.split()) for ts in TEXTS.values() for t in ts)
    assert results["overall"]["cer"]["ref_len"] == chars
    assert results["overall"]["wer"]["ref_len"] == words
    assert results["groups"]["en"]["cer"]["ref_len"] == sum(len(t.replace(" ", "")) for t in TEXTS["en"])
    assert json.loads((out / "results.json").read_text())["groups"].keys() == {"en", "fr"}
    table = format_results_table(results)
    assert "| en | 3 |" in table and "| fr | 3 |" in table and "**all**" in table


def test_resume_continues_to_the_same_weights(corpus, tmp_path):
    from safetensors.torch import load_file

    # SpecAugment and volume perturbation draw from the RNG the checkpoint restores.
    kw = dict(dev_cuts=None, save_every=2, model={"encoder": {"specaugment": True}}, average="last",
              volume_perturb_db=10.0)
    straight = tmp_path / "straight"
    train_asr(_config(corpus, straight, max_steps=4, **kw))
    split = tmp_path / "split"
    train_asr(_config(corpus, split, max_steps=2, **kw))
    train_asr(_config(corpus, split, max_steps=4, **kw), resume=True)
    a = load_file(str(straight / "checkpoints" / "step-000004" / "model.safetensors"))
    b = load_file(str(split / "checkpoints" / "step-000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key


def test_load_asr_model_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="config.json"):
        load_asr_model(tmp_path)


def test_ipa_words_are_phone_groups():
    assert _for_unit("h ə | l oʊ", "word", "ipa") == "hə loʊ"
    assert _for_unit("h ə | l oʊ", "phone", "ipa") == "h ə | l oʊ"
    assert _for_unit("ab ba", "word", "text") == "ab ba"


def test_wall_clock_and_epoch_budgets_stop_with_a_checkpoint(corpus, tmp_path):
    exp = tmp_path / "clock"
    train_asr(_config(corpus, exp, dev_cuts=None, max_steps=None, max_minutes=1e-6,
                      average="last"))
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] == 1
    assert (exp / "checkpoints" / "step-000001").is_dir() and (exp / "final").is_dir()

    exp = tmp_path / "epochs"
    train_asr(_config(corpus, exp, dev_cuts=None, max_steps=None, num_epochs=2,
                      average="last"))
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["stop_reason"] == "num_epochs" and summary["epochs_completed"] == 2
    # 6 cuts of 0.6-0.8 s in batches of at most 3 s: 2 updates per epoch
    assert summary["steps"] == 4


def test_speechfm_train_hands_off_to_the_recipe(repo_root, capsys):
    import yaml

    from speechfm.cli import main

    conf = repo_root / "recipes" / "ctc" / "configs" / "mini_cv_lang.yaml"
    assert main(["train", str(conf), "--print-config", "max_steps=700"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_steps"] == 700 and printed["model_size"] == "ctc_small"
    assert printed["model"]["encoder"]["conformer"]["num_layers"] == 4
    # the model_size prefix picks the recipe: a transducer size runs recipes/transducer
    assert main(["train", str(conf), "--print-config", "model_size=transducer_tiny",
                 "model={}"]) == 0
    assert "transducer_loss" in yaml.safe_load(capsys.readouterr().out)
    assert main(["train", str(conf), "--recipe", "whisper"]) == 2
    assert "no recipe 'whisper'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_under_torchrun_train_validate_export_and_resume(strategy, corpus, repo_root,
                                                                   tmp_path):
    """The run function under torchrun (2 gloo ranks): sharded validation, rank-0 export,
    a checkpoint both ranks resume from; the export loads like any other."""
    import os
    import subprocess
    import sys

    _, cuts, tok = corpus
    exp = tmp_path / strategy
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(repo_root / "recipes" / "ctc" / "train.py"), "/dev/null", "--exp-dir", str(exp),
           f"train_cuts={cuts}", f"dev_cuts={cuts}", f"tokenizer={tok}", "model_size=ctc_tiny",
           "max_duration=3", "num_workers=0", "save_every=2", "valid_every=2", "keep_last=3",
           "average_last=2", "average_period=1", "progress=false", "num_threads=1",
           f"strategy={strategy}", "scheduler.kind=constant", "scheduler.warmup_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*cmd, "max_steps=2"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    again = subprocess.run([*cmd, "max_steps=4", "--resume"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["steps"] == 4 and "2 process(es)" in summary["hardware"]
    # two checkpoints kept (steps 2 and 4): the last weights and their mean, chosen by dev CER
    assert set(summary["average"]["candidates"]) == {"last", "checkpoints"}
    assert "resumed from" in (exp / "log" / "train-rank0.log").read_text()
    model = speechfm.load(exp / "final")
    assert isinstance(model.transcribe(corpus[0] / "en_0.wav"), str)
