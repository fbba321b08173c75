#!/usr/bin/env python3
"""Print, per tail language, the adapter file of its best run on dev (the adapter runs
EXP/adapter_b*/<lang> and EXP/student_b*_r*/<lang>), space-separated: what merge.py takes.

    python local/best_adapters.py --exp exp --langs ky,tt,sv,id [--json]

"Best" is by the metric the runs chose their checkpoint with (their ``select_metric``: WER
or CER), as the exported checkpoint scored it (train_summary.json).  Ties go to the smaller
adapter (fewer parameters).  With ``--foundation-dev DIR`` (the foundation's dev decodes,
DIR/<lang>/final/results.json) the foundation itself is a candidate too -- an adapter's
step 0, as its up-projection starts at zero: a language none of whose adapters beats the
foundation on dev gets no adapter (the merged model runs the base model for it).
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


def foundation_score(decodes: Path, lang: str, metric: str) -> float | None:
    """The foundation's dev ``metric`` (a rate) on ``lang`` from its decode, or None."""
    path = decodes / lang / "final" / "results.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["overall"][metric]["rate"]


def best_runs(exp: Path, langs: list[str], foundation_dev: Path | None = None) -> dict[str, dict]:
    """Per language the chosen run: {"file", "system", "metric", "dev", "params"}; the
    foundation's choice has ``file`` None, ``system`` "foundation" and ``params`` 0."""
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
        metric = runs[0][4]
        base = None if foundation_dev is None else foundation_score(foundation_dev, lang, metric)
        if foundation_dev is not None and base is None:
            raise SystemExit(f"best_adapters.py: no foundation dev decode for {lang} under "
                             f"{foundation_dev}")
        value, params, file, group, metric = min(runs)
        if base is not None and base <= value:
            out[lang] = {"file": None, "system": "foundation", "metric": metric, "dev": base,
                         "params": 0}
        else:
            out[lang] = {"file": file, "system": group, "metric": metric, "dev": value,
                         "params": params}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", required=True, type=Path)
    p.add_argument("--langs", required=True)
    p.add_argument("--foundation-dev", type=Path,
                   help="the foundation's dev decodes (<lang>/final/results.json): a candidate")
    p.add_argument("--json", action="store_true", help="print the choice per language as JSON")
    args = p.parse_args()
    best = best_runs(args.exp, args.langs.split(","), args.foundation_dev)
    print(json.dumps(best) if args.json else " ".join(b["file"] for b in best.values() if b["file"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
