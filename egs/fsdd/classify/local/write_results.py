#!/usr/bin/env python3
"""Write the FSDD classification RESULTS.md table from the run's outputs.

    python local/write_results.py --exp exp --tasks "speaker digit" --out RESULTS.md \
        --command "./run.sh"

Reads EXP/<task>/<init>_<method>/{train_summary.json,test/results.json} with the KWS
recipe's reader (``egs/speech_commands/kws/local/write_results.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "speech_commands" / "kws" / "local"))
from write_results import NAMES, _f, run_row, splice  # noqa: E402

TASKS = {"speaker": "speaker identification (6 speakers; split by take)",
         "digit": "digit classification (10 digits; speaker-disjoint)"}
INITS = {"asit": "ASiT-pretrained", "random_init": "random (scratch)"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="exp", type=Path)
    p.add_argument("--tasks", default="speaker digit")
    p.add_argument("--out", default="RESULTS.md", type=Path)
    p.add_argument("--command", default="./run.sh")
    args = p.parse_args()
    out = ["| task | backbone | method | trainable params | updates | train min | dev acc % "
           "| test acc % | test clips |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for task in args.tasks.split():
        for run in sorted((args.exp / task).glob("*_*")):
            r = run_row(run)
            if r is None:
                continue
            init = next((i for i in INITS if run.name.startswith(i + "_")), None)
            if init is None:
                continue
            method = run.name[len(init) + 1:]
            out.append(f"| {TASKS.get(task, task)} | {INITS[init]} | {NAMES.get(method, method)} | "
                       f"{r['trainable']:,} | {r['steps']} | {r['minutes']:.1f} | {_f(r['dev'])} | "
                       f"{_f(r['test'])} | {r['test_n']:.0f} |")
    out += ["", f"Command: `{args.command}` (from `egs/fsdd/classify`).", ""]
    body = "\n".join(out)
    splice(args.out, body, "# FSDD classification results")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
