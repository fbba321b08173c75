"""egs/fsdd/asr/run.sh stages 0-6 on a subset of the real FSDD recordings.

The recipe's point is a speaker-disjoint score on real speech: the test checks that the
splits really are disjoint by speaker, that every stage ran, and that the report gives a
per-speaker WER for dev and test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict

import pytest

TAKES_PER_DIGIT = 3  # of 50: 6 speakers x 10 digits x 3 = 180 recordings


def _subset(src, dst):
    """Copy the first takes of every (digit, speaker) into dst/recordings."""
    out = dst / "recordings"
    out.mkdir(parents=True)
    by_key = defaultdict(list)
    for wav in sorted(src.glob("*.wav")):
        digit, speaker, take = wav.stem.split("_")
        by_key[digit, speaker].append((int(take), wav))
    for files in by_key.values():
        for _, wav in sorted(files)[:TAKES_PER_DIGIT]:
            shutil.copy(wav, out / wav.name)
    return dst


@pytest.mark.slow
def test_fsdd_recipe_is_speaker_disjoint_and_reports_wer(repo_root, shared_data, tmp_path):
    import lhotse

    root = _subset(shared_data / "fsdd" / "recordings", tmp_path / "fsdd")
    data, exp = tmp_path / "data", tmp_path / "exp"
    cmd = ["bash", str(repo_root / "egs" / "fsdd" / "asr" / "run.sh"), "--data-dir", str(data),
           "--exp-dir", str(exp), "--fsdd-root", str(root), "--nj", "2",
           "--train-args", "max_steps=30 scheduler.warmup_steps=10 valid_every=15 save_every=15 log_every=5 progress=false"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for n in range(7):
        assert f"Stage {n}:" in res.stderr

    speakers = {}
    for split in ("train", "dev", "test"):
        cuts = lhotse.load_manifest(data / "fbank" / f"cuts_{split}.jsonl.gz")
        speakers[split] = {c.supervisions[0].speaker for c in cuts}
        assert len(cuts) == len(speakers[split]) * 10 * TAKES_PER_DIGIT
    assert speakers["dev"] == {"nicolas"} and speakers["test"] == {"theo", "yweweler"}
    assert speakers["train"] == {"george", "jackson", "lucas"}

    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["steps"] == 30 and summary["train_data"]["utterances"] == 90
    for split, expected in (("dev", {"nicolas"}), ("test", {"theo", "yweweler"})):
        results = json.loads((exp / "decode_greedy" / split / "results.json").read_text())
        assert set(results["groups"]) == expected
        assert results["num_utts"] == 10 * TAKES_PER_DIGIT * len(expected)
        wer = results["overall"]["wer"]
        assert wer["ref_len"] == results["num_utts"]  # one digit word per recording
        assert wer["errors"] == wer["ins"] + wer["dels"] + wer["subs"]
    report = (exp / "RESULTS.md").read_text()
    assert "speaker-disjoint" in report
    assert "| theo |" in report and "| yweweler |" in report and "| nicolas |" in report
