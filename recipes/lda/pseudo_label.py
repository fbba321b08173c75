#!/usr/bin/env python3
"""Noisy-student pseudo-labels for one tail language: a teacher transcribes that
language's unlabelled audio and the confident transcripts become training cuts.

    python recipes/lda/pseudo_label.py --teacher DIR [--adapters FILE ...] --language ky \\
        --cuts POOL.jsonl.gz --out DIR [--min-confidence 0.7] [--top-fraction 0.8] \\
        [--method beam] [--first-pass] [--references REFS.jsonl.gz] \\
        [--labelled LABELLED.jsonl.gz --labelled-repeat 2]

The teacher is a model directory (normally the frozen foundation) plus adapter files (the
language's supervised adapter), decoded with the language id; by default through the
cascaded model's final (full-context) pass.  Writes to ``--out``:

- ``pseudo.jsonl.gz``: the kept cuts, their text the teacher's (``custom``: pseudo_label,
  confidence);
- ``train.jsonl.gz``: those plus the labelled cuts (``--labelled``, repeated
  ``--labelled-repeat`` times so that the few true transcripts keep their weight): the
  student's training set;
- ``stats.json``: counts, kept fraction, confidences and, with ``--references`` (the same
  cuts with their true transcripts, never used for training), the teacher's CER/WER on
  all and on the kept cuts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="teacher model directory")
    p.add_argument("--adapters", nargs="*", default=[], help="adapter files to attach")
    p.add_argument("--language", required=True)
    p.add_argument("--cuts", required=True, help="the unlabelled cuts (texts not used)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="keep transcripts whose mean token confidence is at least this")
    p.add_argument("--min-tokens", type=int, default=1)
    p.add_argument("--top-fraction", type=float, default=None,
                   help="then keep only this most confident fraction")
    p.add_argument("--method", default="greedy", choices=("greedy", "beam"))
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--first-pass", action="store_true",
                   help="decode the cascaded model's first (streaming) pass")
    p.add_argument("--references", default=None,
                   help="the same cuts with their true transcripts (for the stats only)")
    p.add_argument("--labelled", default=None, help="labelled cuts added to train.jsonl.gz")
    p.add_argument("--labelled-repeat", type=int, default=1)
    p.add_argument("--max-duration", type=float, default=120.0)
    args = p.parse_args(argv)

    from lhotse import CutSet

    import speechfm
    from speechfm.decode.pseudo_label import (
        filter_pseudo_labels,
        pseudo_label,
        pseudo_label_cuts,
        pseudo_label_stats,
    )
    from speechfm.train.runner import load_cuts

    if args.labelled_repeat < 1:
        p.error("--labelled-repeat must be >= 1")
    teacher = speechfm.load(args.teacher, adapters=args.adapters)
    cuts = CutSet.from_cuts(c for c in load_cuts(args.cuts)
                            if c.supervisions and c.supervisions[0].language == args.language)
    if len(cuts) == 0:
        p.error(f"{args.cuts}: no {args.language} cut")
    search = {"final_pass": False} if args.first_pass else {}
    labels = pseudo_label(teacher.module, cuts, teacher.tokenizer, language=args.language,
                          method=args.method, beam=args.beam, max_duration=args.max_duration,
                          search_kwargs=search, progress=True)
    kept = filter_pseudo_labels(labels, min_confidence=args.min_confidence,
                                min_tokens=args.min_tokens, top_fraction=args.top_fraction)
    refs = None
    if args.references:
        refs = {c.id: c.supervisions[0].text for c in load_cuts(args.references)
                if c.supervisions and c.supervisions[0].text}
    stats = pseudo_label_stats(labels, kept, refs, normalize=teacher.tokenizer.normalize
                               if hasattr(teacher.tokenizer, "normalize") else None)
    stats.update(language=args.language, teacher=args.teacher, adapters=args.adapters,
                 min_confidence=args.min_confidence, top_fraction=args.top_fraction,
                 pass_="first" if args.first_pass else "final")
    args.out.mkdir(parents=True, exist_ok=True)
    pseudo = pseudo_label_cuts(cuts, kept)
    pseudo.to_file(args.out / "pseudo.jsonl.gz")
    train = list(pseudo)
    if args.labelled:
        labelled = [c for c in load_cuts(args.labelled)
                    if c.supervisions and c.supervisions[0].language == args.language]
        train += labelled + [c.with_id(f"{c.id}_l{k}") for k in range(1, args.labelled_repeat)
                             for c in labelled]
        stats["labelled"] = len(labelled)
    CutSet.from_cuts(train).to_file(args.out / "train.jsonl.gz")
    stats["train_cuts"] = len(train)
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1, default=float) + "\n",
                                         encoding="utf-8")
    print(json.dumps({k: stats[k] for k in stats if not isinstance(stats[k], list)},
                     default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
