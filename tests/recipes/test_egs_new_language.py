"""egs/new_language/run.sh end to end on a tiny configuration: a tiny random CTC model as
the base, 30 synthesised Ukrainian utterances (two label amounts of 0.5 and 1 minute), a
few Russian ones as the related language, festvox_ru with half-minute held-out sets and
a copy of 36 FSDD recordings; two updates per run. Checks that every system of every part
trained from the right starting point (the continued-pretraining encoder reused by the
second amount, the related data mixed in, fresh weights for the from-scratch control),
that every table row has its figures, and that a rerun skips what is done."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

RECIPE = ("egs", "new_language")
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def _run(repo_root, root, *args):
    cmd = ["bash", str(repo_root.joinpath(*RECIPE, "run.sh")), "--data-dir", str(root / "data"),
           "--exp-dir", str(root / "exp"), "--base", str(root / "base"), "--utts", "30",
           "--amounts", "0.5 1", "--steps", "0.5:2 1:2", "--pretrain-steps", "2",
           "--related-data", str(root / "ru" / "cuts_train.jsonl.gz"),
           "--diag-cuts", str(root / "ru" / "cuts_dev.jsonl.gz"),
           "--festvox-amounts", "0.5 1", "--festvox-steps", "0.5:2 1:2",
           "--festvox-test-minutes", "0.5", "--festvox-dev-minutes", "0.3",
           "--fsdd-root", str(root / "fsdd"), "--fsdd-steps", "2",
           "--finetune-args", "--threads 1 --no-progress --batch-seconds 20",
           "--results-md", str(root / "RESULTS.md"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def new_language_run(repo_root, shared_data, tmp_path_factory):
    from speechfm.data.corpora.mini_cv_lang import prepare_mini_cv_lang
    from speechfm.models.ctc import create_ctc_model
    from speechfm.models.ctc.config import ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("egs_new_language")
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz'"))
    torch.manual_seed(0)
    config = ctc_tiny(tok.vocab_size)
    save_model_dir(root / "base", create_ctc_model(config), config, parts={"tokenizer": tok})
    prepare_mini_cv_lang(root / "ru", langs=["ru"], utts_per_lang=10, seed=1, num_workers=1)
    (root / "fsdd" / "recordings").mkdir(parents=True)
    for spk in SPEAKERS:
        for digit in range(3):
            for take in range(2):
                name = f"{digit}_{spk}_{take}.wav"
                shutil.copy(shared_data / "fsdd" / "recordings" / name,
                            root / "fsdd" / "recordings" / name)
    res = _run(repo_root, root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, res


def _opts(run) -> dict:
    return json.loads((run / "finetune.json").read_text())


@pytest.mark.slow
def test_new_language_egs_end_to_end(new_language_run):
    root, res = new_language_run
    exp, data = root / "exp", root / "data"
    stages = {int(n) for n in re.findall(r"\(run\.sh:\d+:\w+\) Stage (\d)", res.stderr)}
    assert stages == {0, 1, 2, 3, 4}
    # the synthetic new language: voice-disjoint splits, nested label amounts
    spk = {split: {ln.split()[1] for ln in (data / "uk" / "corpus" / split / "utt2spk").read_text().splitlines()}
           for split in ("train", "dev", "test")}
    assert not spk["test"] & spk["train"] and not spk["dev"] & spk["train"]
    from lhotse import CutSet

    half = {c.id for c in CutSet.from_file(data / "uk" / "train_0.5min.jsonl.gz")}
    one = {c.id for c in CutSet.from_file(data / "uk" / "train_1min.jsonl.gz")}
    assert half < one
    runs = [f"uk_{m}min_{s}" for m in ("0.5", "1") for s in ("ft", "cpt", "multi")]
    runs += [f"festvox_{m}min_{s}" for m in ("0.5", "1") for s in ("ft", "scratch")]
    runs += ["fsdd_ft", "fsdd_scratch"]
    for name in runs:
        run = exp / name
        assert (run / ".done").is_file() and (run / "final" / "model.safetensors").is_file(), name
        summary = json.loads((run / "train" / "train_summary.json").read_text())
        assert summary["steps"] == 2, name
        for split in ("dev", "test"):
            assert json.loads((run / "eval" / split / "results.json").read_text())["num_scored"] > 0
    # continued pretraining once (first amount), its encoder the base of the second amount
    assert (exp / "uk_0.5min_cpt" / "pretrain" / "merged" / "model.safetensors").is_file()
    assert _opts(exp / "uk_0.5min_cpt")["unlabelled"]
    second = _opts(exp / "uk_1min_cpt")
    assert second["base"].endswith("uk_0.5min_cpt/pretrain/merged") and not second["unlabelled"]
    assert not (exp / "uk_1min_cpt" / "pretrain").exists()
    # the check of the continued encoder: the base's head on it and on the base's encoder
    for name in ("base", "cpt"):
        assert json.loads((exp / "diag_cpt" / name / "results.json").read_text())["num_scored"] > 0
    for m in ("0.5", "1"):
        info = json.loads((exp / f"uk_{m}min_multi" / "data" / "data.json").read_text())
        assert info["related"]["taken"]["utterances"] > 0
        assert json.loads((exp / f"uk_{m}min_ft" / "data" / "data.json").read_text())["related"] is None
    for name in ("festvox_0.5min_scratch", "festvox_1min_scratch", "fsdd_scratch"):
        assert _opts(exp / name)["from_scratch"] and "| initialisation |" in (exp / name / "PLAN.md").read_text()
    assert not _opts(exp / "fsdd_ft")["from_scratch"]
    # festvox: text-disjoint held-out sets, nested training sets
    def texts(name):
        return {ln.split("\t")[1] for ln in (data / "festvox" / f"{name}.tsv").read_text().splitlines()[1:]}
    assert not texts("test") & texts("train_1min") and not texts("dev") & texts("train_1min")
    assert texts("train_0.5min") < texts("train_1min") and "+" not in "".join(texts("test"))
    # the tables: every row has its figures
    md = (root / "RESULTS.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| labels")
            and not ln.startswith("| training") and not ln.startswith("| system")]
    assert len(rows) == 1 + 6 + 1 + 4 + 1 + 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        numbers = [c for c in cells if re.fullmatch(r"\d+\.\d", c)]
        assert len(numbers) >= 2, row
    assert "one speaker: text-disjoint, not speaker-disjoint" in md
    assert "What continued pretraining did to the encoder" in md


@pytest.mark.slow
def test_new_language_egs_rerun_skips_what_is_done(repo_root, new_language_run):
    root, _ = new_language_run
    (root / "RESULTS.md").write_text((root / "RESULTS.md").read_text() + "\nprose kept\n")
    res = _run(repo_root, root)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "speechfm finetune" not in res.stdout and "stage train" not in res.stdout
    assert res.stderr.count("is done") == 12
    assert "continued encoder" not in res.stderr  # its check is not decoded again
    assert "prose kept" in (root / "RESULTS.md").read_text()
