#!/usr/bin/env python3
"""The Python API answering spoken instructions from TTS files: ``speechfm.load(model)
.respond(path)``, next to the same model's answer to the written instruction.

    python local/respond_demo.py exp/both_instruct/final --bench data/bench --per-family 1

Takes the first ``--per-family`` benchmark items of every rule family (their clean audio files:
espeak-ng voices of the test pool, which no training data uses), prints one Markdown table
row each (instruction, expected answer, answer to the speech file, answer to the text, both
rule-checked) and the totals. The framing around the input is the one the model was
trained with (its inserter.json), as ``respond`` uses by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import speechfm

    sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "recipes" / "inserter"))
    from instruct import InstructItem, check  # recipes/inserter/instruct.py: the rules

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a speech LM model directory (EXP/<system>/final)")
    p.add_argument("--bench", type=Path, default=Path("data/bench"))
    p.add_argument("--per-family", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=24)
    args = p.parse_args(argv)

    items = [InstructItem.from_dict(json.loads(x))
             for x in (args.bench / "bench.jsonl").read_text("utf-8").splitlines() if x]
    chosen, seen = [], {}
    for item in items:
        if seen.get(item.family, 0) < args.per_family:
            seen[item.family] = seen.get(item.family, 0) + 1
            chosen.append(item)
    model = speechfm.load(args.model)
    print(f"model: {args.model}\n")
    print("| family | spoken instruction (TTS file) | expected | answer to the audio | "
          "answer to the text |")
    print("|---|---|---|---|---|")
    ok = {"speech": 0, "text": 0}
    for item in chosen:
        wav = args.bench / "clean" / "audio" / f"{item.id}.flac"
        if not wav.is_file():
            print(f"{wav}: missing (run stage 1)", file=sys.stderr)
            return 1
        said = model.respond(str(wav), max_new_tokens=args.max_new_tokens)
        read = model.respond(text=item.instruction, max_new_tokens=args.max_new_tokens)
        marks = []
        for name, answer in (("speech", said), ("text", read)):
            good = check(item, answer)
            ok[name] += good
            marks.append(f"{answer or '(empty)'} {'✓' if good else '✗'}")
        family = item.family + (" (held out)" if item.unseen_family else "")
        print(f"| {family} | `{wav.name}`: {item.instruction} | {item.answer} | "
              f"{marks[0]} | {marks[1]} |")
    print(f"\nrule-checked: speech {ok['speech']}/{len(chosen)}, text {ok['text']}/{len(chosen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
