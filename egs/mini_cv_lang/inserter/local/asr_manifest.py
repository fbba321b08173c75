#!/usr/bin/env python3
"""The interleaved corpus's spoken spans as labelled English ASR data (a TSV that
``speechfm finetune`` reads): what stage 1 adapts the speech encoder on when
``--encoder-adapt-steps`` > 0.

    python local/asr_manifest.py --corpus data/interleaved --out data/encoder_asr.tsv

One row per speech segment: ``path<TAB>text<TAB>speaker`` (the espeak-ng voice of the
``train`` pool; the benchmark's ``test`` voices are never among them). These are the same
spoken spans system (a) aligns on, and the instructions of the benchmark are never spoken
in them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_encoder import recipe_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="the interleaved corpus (stage 1)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rows = [(seg["audio"], seg["text"], seg["speaker"])
            for line in recipe_data().read_build(args.corpus)
            for seg in line["segments"] if seg["kind"] == "speech"]
    if not rows:
        p.error(f"{args.corpus}: no speech segments")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        f.write("path\ttext\tspeaker\n")
        for path, text, speaker in rows:
            f.write(f"{path}\t{text}\t{speaker}\n")
    print(f"{args.out}: {len(rows)} utterances, {len({r[2] for r in rows})} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
