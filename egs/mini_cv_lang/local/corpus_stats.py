#!/usr/bin/env python3
"""Print utterances, hours and speakers per split and language from CORPUS/summary.json.

Usage: python local/corpus_stats.py DATA/corpus
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(corpus: str) -> int:
    summary = json.loads((Path(corpus) / "summary.json").read_text(encoding="utf-8"))
    for split, info in summary["splits"].items():
        langs = info["languages"]
        per_lang = " ".join(f"{lang}:{s['utterances']}" for lang, s in langs.items())
        print(
            f"{split:5s} {info['utterances']:6d} utts {info['hours']:7.3f} h "
            f"{info['speakers']:5d} speakers | {per_lang}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
