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
    from conftest import import_recipe

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
    from conftest import import_recipe

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
