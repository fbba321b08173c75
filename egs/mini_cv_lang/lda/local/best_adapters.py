#!/usr/bin/env python3
"""Print, per tail language, the adapter file of its best run on dev (the adapter runs
EXP/adapter_b*/<lang> and EXP/student_b*_r*/<lang>), space-separated: what merge.py takes.

    python local/best_adapters.py --exp exp --langs ky,tt,sv,id [--json]

"Best" is by the metric the runs chose their checkpoint with (their ``select_metric``: WER
or CER), as the exported checkpoint scored it (train_summary.json).  Ties go to the smaller
adapter (fewer parameters).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def dev_score(run: Path) -> tuple[str, float] | None:
    """(metric name, dev value) of a run's exported checkpoint, or None."""
    path = run / "train_summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text(encoding="utf-8"))
    metric = (s.get("config") or {}).get("select_metric", "wer")
    avg = s.get("average") or {}
    dev = (avg.get("candidates") or {}).get(avg.get("chosen")) or s.get(
        "final_valid_last_weights") or {}
    return None if metric not in dev else (metric, dev[metric])


def best_runs(exp: Path, langs: list[str]) -> dict[str, dict]:
    out = {}
    for lang in langs:
        runs = []
        for group in sorted(exp.glob("adapter_b*")) + sorted(exp.glob("student_b*")):
            run = group / lang
            found = dev_score(run)
            file = run / "adapter" / f"{lang}.safetensors"
            if found is not None and file.is_file():
                params = json.loads((run / "train_summary.json").read_text())[
                    "trainable_parameters"]
                runs.append((found[1], params, str(file), group.name, found[0]))
        if not runs:
            raise SystemExit(f"best_adapters.py: no finished adapter run for {lang} under {exp}")
        if len({r[4] for r in runs}) > 1:
            raise SystemExit(f"best_adapters.py: {lang}'s runs chose checkpoints by different "
                             "metrics; rerun them with one select_metric")
        value, params, file, group, metric = min(runs)
        out[lang] = {"file": file, "system": group, "metric": metric, "dev": value,
                     "params": params}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", required=True, type=Path)
    p.add_argument("--langs", required=True)
    p.add_argument("--json", action="store_true", help="print the choice per language as JSON")
    args = p.parse_args()
    best = best_runs(args.exp, args.langs.split(","))
    print(json.dumps(best) if args.json else " ".join(b["file"] for b in best.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
