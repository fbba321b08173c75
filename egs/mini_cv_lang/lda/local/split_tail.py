#!/usr/bin/env python3
"""The LDA data split: an imbalanced foundation training set and each tail language's few
labelled utterances and unlabelled pool.

    python local/split_tail.py --cuts ../data/fbank/cuts_train.jsonl.gz \\
        --head en,es,fr,it,ru,tr,nl,pl --tail ky,tt,sv,id --ratio 10 --seed 0 --out data

Head languages keep every training utterance.  Each tail language keeps ``N / ratio``
labelled utterances (N: the head languages' mean count; a seeded shuffle picks them), so
head : tail is about ``ratio`` : 1 in utterances; the rest of its training utterances are
its unlabelled pool.  Writes to ``--out``:

- ``cuts_foundation_train.jsonl.gz``: head + tail labelled (what the foundation sees);
- ``cuts_tail_labelled.jsonl.gz``: the tail languages' labelled utterances;
- ``cuts_tail_pool.jsonl.gz``: the pools, with their transcripts (text and IPA) removed:
  unlabelled;
- ``cuts_tail_pool_refs.jsonl.gz``: the same cuts with transcripts, for measuring the
  teacher's pseudo-labels only (never trained on);
- ``split.json``: utterances and minutes per language and part.

Deterministic: the same inputs and seed give the same files.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

TRANSCRIPT_KEYS = ("ipa", "text", "normalized_text", "words")
"""Supervision ``custom`` fields that hold a transcript (removed from the pool)."""


def _lang(cut) -> str:
    return cut.supervisions[0].language


def _write(cuts, path: Path) -> None:
    from lhotse import CutSet

    tmp = path.with_name(path.name + ".tmp.jsonl.gz")
    CutSet.from_cuts(cuts).to_file(tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cuts", required=True)
    p.add_argument("--head", required=True, help="comma-separated head languages")
    p.add_argument("--tail", required=True, help="comma-separated tail languages")
    p.add_argument("--ratio", type=float, default=10.0, help="head : tail utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    from dataclasses import replace

    from speechfm.train.runner import load_cuts

    head, tail = args.head.split(","), args.tail.split(",")
    if set(head) & set(tail):
        p.error(f"a language is both head and tail: {sorted(set(head) & set(tail))}")
    by_lang = defaultdict(list)
    for cut in load_cuts(args.cuts):
        by_lang[_lang(cut)].append(cut)
    missing = [lang for lang in head + tail if not by_lang.get(lang)]
    if missing:
        p.error(f"{args.cuts}: no training utterances of {missing}")
    n_head = sum(len(by_lang[lang]) for lang in head) / len(head)
    k = max(1, round(n_head / args.ratio))
    foundation, labelled, pool = [], [], []
    summary = {"head": {}, "tail_labelled": {}, "tail_pool": {}, "ratio": args.ratio,
               "seed": args.seed}
    for lang in head:
        foundation += by_lang[lang]
        summary["head"][lang] = [len(by_lang[lang]),
                                 round(sum(c.duration for c in by_lang[lang]) / 60, 2)]
    for lang in tail:
        cuts = sorted(by_lang[lang], key=lambda c: c.id)
        random.Random(f"{args.seed}:{lang}").shuffle(cuts)
        if len(cuts) <= k:
            p.error(f"{lang}: {len(cuts)} training utterances, not more than the {k} labelled")
        chosen, rest = cuts[:k], cuts[k:]
        labelled += chosen
        pool += rest
        summary["tail_labelled"][lang] = [len(chosen),
                                          round(sum(c.duration for c in chosen) / 60, 2)]
        summary["tail_pool"][lang] = [len(rest), round(sum(c.duration for c in rest) / 60, 2)]
    foundation += labelled
    # No transcript of any kind stays with the pool (the corpus keeps the IPA in custom).
    unlabelled = [c.map_supervisions(lambda s: replace(
        s, text=None, custom={k: v for k, v in (s.custom or {}).items()
                              if k not in TRANSCRIPT_KEYS} or None)) for c in pool]
    args.out.mkdir(parents=True, exist_ok=True)
    _write(foundation, args.out / "cuts_foundation_train.jsonl.gz")
    _write(labelled, args.out / "cuts_tail_labelled.jsonl.gz")
    _write(unlabelled, args.out / "cuts_tail_pool.jsonl.gz")
    _write(pool, args.out / "cuts_tail_pool_refs.jsonl.gz")
    (args.out / "split.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
