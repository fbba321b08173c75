#!/usr/bin/env python3
"""A labelled subset of a cut manifest: the first N cuts of every language after a seeded
shuffle (deterministic: same manifest, N and seed -> the same subset, in manifest order).

    python local/subset.py --cuts DATA/fbank/cuts_train.jsonl.gz --per-lang 80 --seed 0 \
        --out DATA/ssl/cuts_train_80.jsonl.gz

Prints the utterances and hours per language. A language with fewer than N cuts keeps all
of them (with a warning), so the largest budget may simply be the whole training set.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path


def _lang(cut) -> str:
    sup = cut.supervisions[0] if cut.supervisions else None
    return (sup.language if sup is not None and sup.language else None) or "unk"


def main(argv: list[str] | None = None) -> int:
    from lhotse import CutSet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", required=True, type=Path)
    p.add_argument("--per-lang", required=True, type=int, help="utterances per language (N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.per_lang < 1:
        p.error(f"--per-lang must be >= 1, got {args.per_lang}")

    cuts = list(CutSet.from_file(args.cuts))
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, cut in enumerate(cuts):
        by_lang[_lang(cut)].append(i)
    # one generator per language, seeded by (seed, language): a language's subset does not
    # depend on which other languages are in the manifest
    keep: set[int] = set()
    for lang, idx in sorted(by_lang.items()):
        ids = sorted(idx, key=lambda i: cuts[i].id)
        random.Random(f"{args.seed}:{lang}").shuffle(ids)
        if len(ids) < args.per_lang:
            print(f"subset.py: warning: {lang} has only {len(ids)} cuts (< {args.per_lang}): "
                  "all kept", file=sys.stderr)
        keep.update(ids[:args.per_lang])
    chosen = [cut for i, cut in enumerate(cuts) if i in keep]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.jsonl.gz")
    CutSet.from_cuts(chosen).to_file(tmp)
    tmp.replace(args.out)  # a killed run never leaves a half-written subset behind

    hours: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for cut in chosen:
        hours[_lang(cut)] += cut.duration / 3600
        count[_lang(cut)] += 1
    print(f"{args.out}: {len(chosen)} utterances, {sum(hours.values()):.3f} h "
          f"({args.per_lang} per language, seed {args.seed})")
    for lang in sorted(count):
        print(f"  {lang}: {count[lang]} utts, {hours[lang]:.3f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
