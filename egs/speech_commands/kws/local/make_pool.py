#!/usr/bin/env python3
"""The unlabelled pretraining pool of the classification recipes: training audio only.

    python local/make_pool.py --out POOL.jsonl.gz --cuts A.jsonl.gz [B.jsonl.gz ...]
        [--window-cuts C.jsonl.gz --window 1.0 --max-windows N --seed S]

``--cuts`` manifests (the training splits of Speech Commands and FSDD's training
speakers) are taken whole; ``--window-cuts`` (mini_cv_lang training sentences) are cut into
``--window``-second pieces (the spectrogram transformer's input size; pieces under half a
window dropped), of which ``--max-windows`` are drawn (seeded).  Every label is removed
(:func:`speechfm.data.subsets.merge_unlabelled`); the counts are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import random


def main() -> int:
    from lhotse import CutSet

    from speechfm.data.subsets import merge_unlabelled
    from speechfm.train.runner import load_cuts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cuts", nargs="+", required=True, help="manifests taken whole")
    p.add_argument("--window-cuts", nargs="*", default=[], help="manifests cut into windows")
    p.add_argument("--window", type=float, default=1.0, help="window length in seconds")
    p.add_argument("--max-windows", type=int, default=3000, help="windows drawn (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    sets = [load_cuts(c).to_eager() for c in args.cuts]
    counts = {c: len(s) for c, s in zip(args.cuts, sets, strict=True)}
    for path in args.window_cuts:
        pieces = [w for w in load_cuts(path).to_eager().cut_into_windows(args.window)
                  if w.duration >= args.window / 2]
        random.Random(args.seed).shuffle(pieces)
        if args.max_windows:
            pieces = pieces[: args.max_windows]
        pieces = [w.with_id(f"win_{w.id}") for w in pieces]
        sets.append(CutSet.from_cuts(pieces))
        counts[path] = len(pieces)
    pool = merge_unlabelled(*sets)
    pool.to_file(args.out)
    hours = sum(c.duration for c in pool) / 3600
    print(json.dumps({"out": args.out, "clips": len(pool), "hours": round(hours, 3),
                      "from": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
