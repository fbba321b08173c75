#!/usr/bin/env python3
"""Cut selections for the Whistle task (deterministic: same inputs -> same output).

    # the cuts of some languages
    python ../local/select_cuts.py langs --cuts IN.jsonl.gz --langs en,es --out OUT.jsonl.gz \
        [--text KALDI_TEXT --text-out FILTERED_TEXT] [--drop-features]
    # per language, the first cuts after a seeded shuffle until M minutes are reached
    python ../local/select_cuts.py minutes --cuts IN.jsonl.gz --lang pl --minutes 5 --seed 0 \
        --out OUT.jsonl.gz

``minutes`` subsets are nested: the 1-minute subset is a prefix of the 5-minute one (same
shuffle), so a larger amount only adds data. Prints utterances and minutes per language.
``--drop-features`` removes the stored (lilcom-compressed, so slightly lossy) features: the
decoder then computes fbank from the audio, exactly as the Python API does.
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


def _write(cuts, out: Path) -> None:
    from lhotse import CutSet

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.jsonl.gz")
    CutSet.from_cuts(cuts).to_file(tmp)
    tmp.replace(out)  # a killed run never leaves a half-written manifest behind
    minutes: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for cut in cuts:
        minutes[_lang(cut)] += cut.duration / 60
        count[_lang(cut)] += 1
    print(f"{out}: {len(cuts)} utterances, {sum(minutes.values()):.1f} min")
    for lang in sorted(count):
        print(f"  {lang}: {count[lang]} utts, {minutes[lang]:.2f} min")


def main(argv: list[str] | None = None) -> int:
    from lhotse import CutSet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("langs")
    a.add_argument("--cuts", required=True, type=Path)
    a.add_argument("--langs", required=True, help="comma-separated language codes")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--text", type=Path, help="a Kaldi text file to filter by the same cuts")
    a.add_argument("--text-out", type=Path)
    a.add_argument("--drop-features", action="store_true",
                   help="drop stored features (fbank is then computed from the audio)")
    m = sub.add_parser("minutes")
    m.add_argument("--cuts", required=True, type=Path)
    m.add_argument("--lang", required=True)
    m.add_argument("--minutes", required=True, type=float)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    cuts = list(CutSet.from_file(args.cuts))
    if args.cmd == "langs":
        langs = set(args.langs.split(","))
        chosen = [c for c in cuts if _lang(c) in langs]
        missing = langs - {_lang(c) for c in chosen}
        if missing:
            p.error(f"{args.cuts}: no cuts of {sorted(missing)}")
        if args.drop_features:
            chosen = [c.drop_features() for c in chosen]
        _write(chosen, args.out)
        if args.text:
            if not args.text_out:
                p.error("--text needs --text-out")
            ids = {s.id for c in chosen for s in c.supervisions} | {c.id for c in chosen}
            lines = [ln for ln in args.text.read_text(encoding="utf-8").splitlines()
                     if ln.split(maxsplit=1)[0] in ids]
            args.text_out.parent.mkdir(parents=True, exist_ok=True)
            args.text_out.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
            print(f"{args.text_out}: {len(lines)} transcripts")
        return 0

    if args.minutes <= 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    pool = sorted((c for c in cuts if _lang(c) == args.lang), key=lambda c: c.id)
    if not pool:
        p.error(f"{args.cuts}: no cuts of language {args.lang!r}")
    random.Random(f"{args.seed}:{args.lang}").shuffle(pool)
    chosen, total = [], 0.0
    for cut in pool:
        if total >= args.minutes * 60:
            break
        chosen.append(cut)
        total += cut.duration
    if total < args.minutes * 60:
        print(f"select_cuts.py: warning: {args.lang} has only {total / 60:.2f} min "
              f"(< {args.minutes}): all kept", file=sys.stderr)
    _write(chosen, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
