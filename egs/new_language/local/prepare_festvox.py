#!/usr/bin/env python3
"""festvox_ru (real read Russian, one speaker) -> text-disjoint test / dev and nested
training subsets, as TSV files ``speechfm finetune`` reads (deterministic given --seed).

    python local/prepare_festvox.py --root ../../../shared/data/festvox_ru --out data/festvox \
        --test-minutes 11 --dev-minutes 4 --train-minutes 5,15,30 --seed 0

Writes OUT/{test,dev}.tsv and OUT/train_<M>min.tsv (``path<TAB>text<TAB>speaker`` with a
header; absolute paths), and OUT/split.json (utterances and minutes of each). The
recording's markup is removed from the references: ``+`` after a stressed vowel; the
commas that mark the speaker's pauses are punctuation, which scoring ignores anyway.

Sentences with the same normalised text always land in the same set (text-disjoint). With
one speaker, the sets are not speaker-disjoint: results on them measure adaptation to this
speaker and microphone, not generalisation to other voices.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from pathlib import Path

SPEAKER = "msu_ru_nsh"


def clean_text(text: str) -> str:
    """The reference: stress marks out, spaces tidied (punctuation is left to scoring)."""
    return re.sub(r"\s+", " ", text.replace("+", "")).strip()


def _key(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the festvox_ru folder (text.tsv, audio/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--test-minutes", type=float, default=11.0)
    p.add_argument("--dev-minutes", type=float, default=4.0)
    p.add_argument("--train-minutes", default="5,15,30", help="nested training amounts (minutes)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    table = args.root / "text.tsv"
    if not table.is_file():
        p.error(f"{table}: not found (is --root the festvox_ru folder?)")
    with table.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    groups: dict[str, list[dict]] = {}
    for row in rows:
        path = (args.root / row["path"]).resolve()
        if not path.is_file():
            p.error(f"{table}: {row['id']}: audio {path} is missing")
        text = clean_text(row["text"])
        if not text:
            p.error(f"{table}: {row['id']}: empty text")
        groups.setdefault(_key(text), []).append(
            {"id": row["id"], "path": str(path), "text": text,
             "seconds": sf.info(str(path)).duration})
    keys = sorted(groups)
    random.Random(args.seed).shuffle(keys)

    sets: dict[str, list[dict]] = {"test": [], "dev": [], "pool": []}
    minutes = {"test": args.test_minutes, "dev": args.dev_minutes}
    for key in keys:
        target = next((name for name in ("test", "dev")
                       if sum(r["seconds"] for r in sets[name]) < minutes[name] * 60), "pool")
        sets[target].extend(groups[key])
    amounts = sorted(float(m) for m in args.train_minutes.split(","))
    pool_minutes = sum(r["seconds"] for r in sets["pool"]) / 60
    if amounts[-1] > pool_minutes + 1e-6:
        p.error(f"--train-minutes {amounts[-1]:g}: only {pool_minutes:.1f} min are left for "
                f"training after test and dev")

    args.out.mkdir(parents=True, exist_ok=True)

    def write(name: str, items: list[dict]) -> dict:
        with (args.out / f"{name}.tsv").open("w", encoding="utf-8") as f:
            f.write("path\ttext\tspeaker\n")
            for r in items:
                f.write(f"{r['path']}\t{r['text']}\t{SPEAKER}\n")
        return {"utterances": len(items), "minutes": round(sum(r["seconds"] for r in items) / 60, 2)}

    split = {"speaker": SPEAKER, "seed": args.seed,
             "note": "one speaker: text-disjoint, not speaker-disjoint",
             "test": write("test", sets["test"]), "dev": write("dev", sets["dev"])}
    for m in amounts:  # nested: each amount is a prefix of the pool's order
        chosen, total = [], 0.0
        for r in sets["pool"]:
            if total >= m * 60:
                break
            chosen.append(r)
            total += r["seconds"]
        split[f"train_{m:g}min"] = write(f"train_{m:g}min", chosen)
    (args.out / "split.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
