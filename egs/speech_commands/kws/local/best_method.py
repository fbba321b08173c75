#!/usr/bin/env python3
"""Print the method whose run has the best dev accuracy (the weights the run exported).

    python local/best_method.py --exp-group exp/petl --methods "lora prompt ..."

Reads DIR/<method>/train_summary.json; methods without a finished run are skipped (an
error if none has one).  Ties go to the method listed first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def dev_accuracy(run: Path) -> float | None:
    path = run / "train_summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text(encoding="utf-8"))
    chosen = s.get("average", {}).get("chosen")
    dev = (s.get("average", {}).get("candidates") or {}).get(chosen) or s.get(
        "final_valid_last_weights") or {}
    return dev.get("accuracy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-group", required=True, type=Path)
    p.add_argument("--methods", required=True)
    args = p.parse_args()
    best = None
    for m in args.methods.split():
        acc = dev_accuracy(args.exp_group / m)
        if acc is not None and (best is None or acc > best[1]):
            best = (m, acc)
    if best is None:
        print(f"best_method.py: no finished run of {args.methods} under {args.exp_group}",
              file=sys.stderr)
        return 1
    print(best[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
