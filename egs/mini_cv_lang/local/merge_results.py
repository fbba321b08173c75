#!/usr/bin/env python3
"""Merge per-language ``speechfm decode`` results into one results.json: each input's
overall scores become a group (its language), the overall scores are summed over them.

    python ../local/merge_results.py --part en:EXP/decode_lm/dev/en --part es:... \
        --out EXP/decode_lm/dev

Reads every PART_DIR/results.json and concatenates hyps.txt/refs.txt; writes OUT/results.json
(same layout as ``speechfm decode``'s, with ``"merged_from"``), OUT/hyps.txt, OUT/refs.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_SUMMED = ("errors", "ref_len", "ins", "dels", "subs", "num_utts", "sentence_errors")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", required=True, help="GROUP:DIR")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    groups, merged, first = {}, {}, None
    hyps, refs = [], []
    for spec in args.part:
        group, _, directory = spec.partition(":")
        d = Path(directory)
        res = json.loads((d / "results.json").read_text(encoding="utf-8"))
        first = first or res
        groups[group] = res["overall"]
        for metric, entry in res["overall"].items():
            acc = merged.setdefault(metric, dict.fromkeys(_SUMMED, 0))
            for key in _SUMMED:
                acc[key] += entry.get(key, 0)
        for name, lines in (("hyps.txt", hyps), ("refs.txt", refs)):
            if (d / name).is_file():
                lines.extend((d / name).read_text(encoding="utf-8").splitlines())
    for entry in merged.values():
        entry["rate"] = entry["errors"] / max(entry["ref_len"], 1)
        entry["percent"] = round(100 * entry["rate"], 4)
    out = dict(first, overall=merged, groups=groups, group_by="lang",
               num_utts=sum(g.get("num_utts", 0) for g in (v.get("wer") or v.get("cer") or {} for v in groups.values())),
               merged_from=[s.partition(":")[2] for s in args.part])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    (args.out / "hyps.txt").write_text("".join(x + "\n" for x in hyps), encoding="utf-8")
    (args.out / "refs.txt").write_text("".join(x + "\n" for x in refs), encoding="utf-8")
    print(f"merged {len(groups)} parts -> {args.out}/results.json: "
          + ", ".join(f"{m} {e['percent']:.2f} %" for m, e in merged.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
