"""egs/mini_cv_lang/inserter/run.sh end to end on a tiny configuration: a tiny random CTC
model as the speech encoder and the cascade's ASR, a corpus of two short documents + two
generated ones, two benchmark items per family (one evaluated), ``speech_lm_tiny`` and three
updates per run. Checks every stage ran and left its files, that the three speech systems
share the encoder cache of stage 1, the evaluation of every system and condition, the
RESULTS.md tables (prose kept on a rerun) and that a rerun after a kill resumes the killed
run only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

RECIPE = ("egs", "mini_cv_lang", "inserter")
DOCS = {
    "river": "The River\n\nThe river runs past the old mill. Children play on the bank. "
             "The water is cold in spring. Birds sing in the trees.",
    "market": "The Market\n\nThe market opens early. Farmers bring fresh bread. "
              "People buy apples and pears. Everyone goes home at noon.",
}
TINY = ("model_size=speech_lm_tiny num_instructions=40 max_duration=5 save_every=3 "
        "valid_every=3 keep_last=2 average=last log_every=1 progress=false num_threads=1 "
        "scheduler.warmup_steps=0")
MODES = ("asr", "interleave", "both")
SYSTEMS = ("text",) + tuple(f"speech_{m}" for m in MODES) + tuple(f"{m}_instruct" for m in MODES)
CONDITIONS = ("text", "speech_clean", "speech_noisy", "cascade_clean", "cascade_noisy")


def _run(repo_root, root, *args):
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(root / "data"),
           "--exp-dir", str(root / "exp"), "--encoder", str(root / "ctc"), "--udhr", "false",
           "--text-files", str(root / "texts"), "--generated-docs", "2", "--n-per-family", "2",
           "--tokenizer-vocab", "300", "--text-steps", "3", "--speech-steps", "3",
           "--instruct-steps", "3", "--text-args", TINY, "--speech-args", TINY,
           "--instruct-args", TINY, "--limit-per-family", "1", "--max-new-tokens", "6",
           "--encoder-adapt-steps", "2",
           "--results-md", str(root / "RESULTS.md"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    return res


def _stages(stderr: str) -> set[int]:
    return {int(n) for n in re.findall(r"\(run\.sh:\d+:\w+\) Stage (\d):", stderr)}


@pytest.fixture(scope="module")
def inserter_run(repo_root, tmp_path_factory):
    from speechfm.models.ctc import create_ctc_model
    from speechfm.models.ctc.config import ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("egs_inserter")
    (root / "texts").mkdir()
    for name, text in DOCS.items():
        (root / "texts" / f"{name}.txt").write_text(text, encoding="utf-8")
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz'"))
    torch.manual_seed(0)
    config = ctc_tiny(tok.vocab_size)
    save_model_dir(root / "ctc", create_ctc_model(config), config, parts={"tokenizer": tok})
    res = _run(repo_root, root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, res


@pytest.mark.slow
def test_inserter_egs_end_to_end(repo_root, inserter_run):
    root, res = inserter_run
    data, exp = root / "data", root / "exp"
    assert _stages(res.stderr) == set(range(7))
    # stage 1: corpus, benchmark, and one encoder cache for the corpus and both audio sets
    index = json.loads((data / "interleaved" / "index.json").read_text())
    assert index["documents"] == 4 and index["segments"]["speech"] > 0
    items = (data / "bench" / "bench.jsonl").read_text().splitlines()
    assert len(items) == 2 * 15
    (corpus_cache,) = (data / "interleaved" / "encoder_cache").glob("*/index.json")
    for variant in ("clean", "noisy"):
        (cache,) = (data / "bench" / "encoder_cache" / variant).glob("*/index.json")
        assert cache.parent.name == corpus_cache.parent.name  # one encoder
    assert (data / "lm_tokenizer" / "tokenizer.json").is_file()
    # stage 1: the encoder adapted to English on the corpus's spoken spans; the speech LMs
    # hold its encoder (not the base's), frozen
    from speechfm.models.io import read_weights

    adapted = read_weights(exp / "encoder_en" / "final")
    base = read_weights(root / "ctc")
    slm = read_weights(exp / "both_instruct" / "final")
    tsv = (data / "encoder_asr.tsv").read_text().splitlines()
    assert len(tsv) - 1 == index["segments"]["speech"]
    keys = [k for k in adapted if k.startswith("encoder.conformer.")]
    assert keys and all(torch.equal(slm[k], adapted[k]) for k in keys)
    assert any(not torch.equal(base[k], adapted[k]) for k in keys)
    # stages 2-4: every run exported, each speech run read the stage-1 cache
    for mode in MODES:
        s = json.loads((exp / f"speech_{mode}" / "train_summary.json").read_text())
        assert s["mode"] == mode and s["steps"] == 3
        assert s["encoder_cache"] == str(corpus_cache.parent)
        assert s["config"]["init_from"] == str(exp / "text" / "final")
        info = json.loads((exp / f"{mode}_instruct" / "final" / "inserter.json").read_text())
        assert [(x["stage"], x["mode"]) for x in info["stages"]] == [
            ("text", None), ("speech", mode), ("instruct", None)]
    # stage 5: every system, every condition; the cascade (ASR -> text LM) on exp/text only
    for system in SYSTEMS:
        r = json.loads((exp / "eval" / system / "results.json").read_text())
        assert r["num_items"] == 15 and r["max_new_tokens"] == 6, system
        for cond in CONDITIONS:
            if cond.startswith("cascade") and system != "text":
                assert r[cond] is None
                continue
            assert r[cond]["all"]["total"] == 15 and r[cond]["unseen"]["total"] == 1, (system,
                                                                                      cond)
        if system == "text":
            assert r["asr"] == str(exp / "encoder_en" / "final")
            assert r["cascade_noisy"]["asr_wer"] >= 0
    # stage 6: the tables
    text = (root / "RESULTS.md").read_text()
    for heading in ("## Data", "## Accuracy (%) by input", "## Speech–text gap",
                    "## Per family: the best speech system", "## The cascade's ASR",
                    "## Model, tokenizer and the CPU budget of each stage", "## Commands"):
        assert heading in text, heading
    for label in ("text LM", "ASR alignment + instruct", "InSerter (interleaved) + instruct",
                  "ASR + interleaved + instruct", "InSerter (interleaved), before instruct",
                  "cascade: ASR"):
        assert f"| {label}" in text, label
    assert "| last_letter (held out) |" in text
    for run in SYSTEMS:
        assert f"| {run} |" in text, run  # the budget table
    assert "--limit-per-family 1" in text and "evaluate.py" in text


@pytest.mark.slow
def test_inserter_egs_rerun_resumes_and_keeps_prose(repo_root, inserter_run):
    root, _ = inserter_run
    exp, md = root / "exp", root / "RESULTS.md"
    md.write_text("# Mine\n\nBefore.\n\n" + md.read_text().split("\n", 1)[1] + "\nAfter.\n")
    stamp = (exp / "text" / "final" / "model.safetensors").stat().st_mtime_ns
    # a run killed after its last checkpoint, before its export
    (exp / "both_instruct" / ".done").unlink()
    shutil.rmtree(exp / "both_instruct" / "final")
    res = _run(repo_root, root, "--stage", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"Stage 4: .*speech_both, .*\(resumed\) -> \S*both_instruct", res.stderr)
    assert "resumed from" in res.stderr
    assert len(re.findall(r"Stage [234]: .* is done", res.stderr)) == 6
    assert (exp / "both_instruct" / "final" / "model.safetensors").is_file()
    assert (exp / "text" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    # only the re-exported system is evaluated again
    assert re.findall(r"Stage 5: evaluate (\w+)", res.stderr) == ["both_instruct"]
    text = md.read_text()
    assert text.startswith("# Mine\n\nBefore.\n") and text.rstrip().endswith("After.")
    assert text.count("<!-- tables: begin -->") == 1 and "## Accuracy (%) by input" in text


def test_inserter_egs_refuses_a_missing_encoder(repo_root, tmp_path):
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(tmp_path / "d"),
           "--exp-dir", str(tmp_path / "e"), "--encoder", str(tmp_path / "nothing"),
           "--stop-stage", "0"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "is not a speechfm model directory" in res.stderr
