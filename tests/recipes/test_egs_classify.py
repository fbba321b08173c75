"""egs/speech_commands/kws/run.sh and egs/fsdd/classify/run.sh end to end with tiny budgets:
real Speech Commands / FSDD data, the unlabelled pool, ASiT pretraining + ablation
backbones + random twin, PETL / scratch / few-shot / ablation fine-tunes, test scoring
and RESULTS.md."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ASIT_ARGS = ("model_size=asit_mini model.backbone.fbank.num_mel_bins=32 "
             "model.backbone.target_frames=100 max_steps=2 valid_every=2 save_every=2 "
             "scheduler.warmup_steps=1 model.loss.teacher_temperature_warmup_steps=1 "
             "max_duration=8 progress=false")
FT_ARGS = "max_steps=2 valid_every=2 save_every=2 scheduler.warmup_steps=1 max_duration=8 progress=false"


@pytest.fixture(scope="module")
def kws_run(repo_root, tmp_path_factory):
    if not (SHARED / "speech_commands_v2_test12").is_dir() or not (SHARED / "fsdd").is_dir():
        pytest.skip(f"needs Speech Commands 12 and FSDD under {SHARED}")
    root = tmp_path_factory.mktemp("egs_kws")
    kws = repo_root / "egs" / "speech_commands" / "kws"
    data, exp = root / "data", root / "exp"
    cmd = ["bash", str(kws / "run.sh"), "--data-dir", str(data), "--exp-dir", str(exp),
           "--mcl-utts", "3", "--pool-windows", "20", "--asit-args", ASIT_ARGS,
           "--ft-args", FT_ARGS, "--methods", "linear adapter_houlsby_par",
           "--best-adapter", "adapter_houlsby_par", "--shots", "1",
           "--fewshot-methods", "linear", "--fewshot-steps", "2", "--long-steps", "2",
           "--results-md", str(root / "RESULTS.md")]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root, data, exp, res


def _speakers(path: Path) -> set[str]:
    with gzip.open(path, "rt") as f:
        return {s["speaker"] for line in f for s in json.loads(line)["supervisions"]}


@pytest.mark.slow
def test_kws_splits_pool_and_models(kws_run):
    root, data, exp, _ = kws_run
    sc = data / "sc12"
    tr, dv, te = (_speakers(sc / f"cuts_{s}.jsonl.gz") for s in ("train", "dev", "test"))
    assert tr and dv and te and not (tr & dv) and not (tr & te) and not (dv & te)
    with gzip.open(data / "pool.jsonl.gz", "rt") as f:
        pool = [json.loads(line) for line in f]
    assert all(s.get("text") is None for c in pool for s in c["supervisions"])
    test_ids = set()
    with gzip.open(sc / "cuts_test.jsonl.gz", "rt") as f:
        test_ids = {json.loads(line)["id"] for line in f}
    assert not test_ids & {c["id"] for c in pool}  # never test audio
    for name in ("asit", "asit_recon", "asit_recon_local"):
        assert (exp / name / "final" / "config.json").is_file()
    for run in ("petl/linear", "petl/adapter_houlsby_par", "scratch/full_lr1e-3",
                "scratch/adapter_houlsby_par", "fewshot/1shot_linear",
                "fewshot/1shot_adapter_houlsby_par", "ablation/asit_recon_linear",
                "ablation/asit_recon_local_full_lr1e-3", "long/full_lr1e-3",
                "conformer/full_lr1e-3_mixup"):
        results = json.loads((exp / run / "test" / "results.json").read_text())
        assert results["num_utts"] == len(test_ids)
    summary = json.loads((exp / "petl" / "linear" / "train_summary.json").read_text())
    assert summary["trainable_parameters"] < summary["total_parameters"]
    assert summary["config"]["backbone"].endswith("asit/final")
    conformer = json.loads((exp / "conformer" / "full_lr1e-3_mixup" / "final" / "config.json")
                           .read_text())
    assert conformer["family"] == "classifier"


@pytest.mark.slow
def test_kws_results_tables(kws_run):
    root = kws_run[0]
    text = (root / "RESULTS.md").read_text()
    for heading in ("## 1. Every PETL method", "## 2. ASiT-pretrained vs random",
                    "## 3. Few-shot", "## 4. ASiT loss ablation", "## 5. Encoder architecture"):
        assert heading in text
    assert "| linear probe (head only) |" in text
    assert "Best model by dev accuracy" in text and ".classify(path, top_k=3)" in text


@pytest.mark.slow
def test_fsdd_classify_uses_the_kws_backbones(kws_run, repo_root):
    root, _, exp, _ = kws_run
    fsdd = repo_root / "egs" / "fsdd" / "classify"
    out = root / "fsdd"
    # the FSDD recipe reads the KWS recipe's exp/; point it at this run's
    kws_dir = root / "kws"
    kws_dir.mkdir()
    (kws_dir / "exp").symlink_to(exp)
    (kws_dir / "local").symlink_to(repo_root / "egs" / "speech_commands" / "kws" / "local")
    cmd = ["bash", str(fsdd / "run.sh"), "--data-dir", str(out / "data"), "--exp-dir",
           str(out / "exp"), "--kws", str(kws_dir), "--ft-args", FT_ARGS, "--tasks", "speaker",
           "--speaker-methods", "full_lr1e-3", "--results-md", str(out / "RESULTS.md")]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for init in ("asit", "random_init"):
        results = json.loads((out / "exp" / "speaker" / f"{init}_full_lr1e-3" / "test" /
                              "results.json").read_text())
        assert results["num_utts"] == 300
    text = (out / "RESULTS.md").read_text()
    assert "| speaker identification" in text and "ASiT-pretrained" in text
