#!/usr/bin/env python3
"""Text for one language's n-gram LM and lexicon: the training transcripts plus everyday
text (the UDHR sentences of the corpus's training split and wordfreq word sequences drawn
with a seed of their own), never a dev or test sentence.

    python ../local/lm_text.py --lang pl --train-text DATA/clean/train/text \
        --exclude-text DATA/clean/dev/text --exclude-text DATA/clean/test/text \
        --wordfreq 3000 --corpus-seed 0 --out DIR/lm_text.txt

Kaldi text files are filtered to ``--lang`` by their utterance ids (``<lang>_...``) when
``--utt2lang`` is given. Every candidate line equal (after whitespace normalisation) to a
dev/test transcript is dropped, and the count is printed: the LM never sees a held-out
sentence. The UDHR training-split sentences are the corpus's own split
(speechfm.data.corpora.text_sources.udhr_prompts with the corpus seed), so they are
disjoint from its dev/test sentences by construction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _kaldi_text(path: Path, lang: str, utt2lang: dict[str, str] | None) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            continue
        if utt2lang is not None and utt2lang.get(parts[0]) != lang:
            continue
        out.append(" ".join(parts[1].split()))
    return out


def main(argv: list[str] | None = None) -> int:
    from speechfm.data.corpora.text_sources import udhr_prompts, wordfreq_prompts

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang", required=True)
    p.add_argument("--train-text", type=Path, action="append", default=[])
    p.add_argument("--exclude-text", type=Path, action="append", default=[])
    p.add_argument("--utt2lang", type=Path, action="append", default=[],
                   help="utt2lang files: keep only --lang's lines of the Kaldi texts")
    p.add_argument("--wordfreq", type=int, default=3000, help="wordfreq sequences to add")
    p.add_argument("--corpus-seed", type=int, default=0, help="the corpus's seed (its UDHR split)")
    p.add_argument("--text-dir", default=None, help="UDHR texts (default ../shared/data/udhr2)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--oov-out", type=Path, help="JSON {split: [OOV tokens, tokens]} of each "
                   "--exclude-text file (split = its folder's name) against the LM text's words")
    args = p.parse_args(argv)

    utt2lang = None
    if args.utt2lang:
        utt2lang = {}
        for f in args.utt2lang:
            for line in f.read_text(encoding="utf-8").splitlines():
                k, _, v = line.partition(" ")
                utt2lang[k] = v.strip()
    held_out = {t for f in args.exclude_text for t in _kaldi_text(f, args.lang, utt2lang)}
    sources = {
        "training transcripts": [t for f in args.train_text for t in _kaldi_text(f, args.lang, utt2lang)],
        "UDHR (training split)": udhr_prompts(args.lang, text_dir=args.text_dir,
                                              seed=args.corpus_seed)["train"],
        "wordfreq sequences": wordfreq_prompts(args.lang, args.wordfreq, seed=args.corpus_seed,
                                               split="lm"),
    }
    lines: list[str] = []
    for name, texts in sources.items():
        kept = [t for t in texts if t and t not in held_out]
        print(f"{args.lang}: {name}: {len(kept)} lines ({len(texts) - len(kept)} dropped: "
              "equal to a dev/test transcript)")
        lines.extend(kept)
    if not lines:
        p.error(f"no LM text for {args.lang}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(t + "\n" for t in lines), encoding="utf-8")
    words = {w for t in lines for w in t.split()}
    print(f"{args.out}: {len(lines)} lines, {len(words)} distinct words; "
          f"{len(held_out)} held-out sentences excluded")
    if args.oov_out:
        import json

        from speechfm.decode.graph import oov_rate

        oov = {}
        for f in args.exclude_text:
            n, total = oov_rate(_kaldi_text(f, args.lang, utt2lang), words)
            oov[f.parent.name] = [n, total]
            print(f"{args.lang} {f.parent.name}: OOV {n}/{total} = {100 * n / max(total, 1):.2f} %")
        args.oov_out.write_text(json.dumps(oov) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
