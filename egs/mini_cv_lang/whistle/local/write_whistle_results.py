#!/usr/bin/env python3
"""Write RESULTS.md of the Whistle task: the crosslingual fine-tuning table (every system x
unseen language x minutes: PER greedy, WER greedy and through the lexicon + LM graph, dev
and test), the pretrained models on the seen languages, the OOV rates, the commands.

    python local/write_whistle_results.py --exp exp --data ../data/whistle \
        --run ft_phoneme_pl_1min:phoneme:pl:1 [--run ...] --pretrained pt_phoneme \
        [--pretrained pt_subword] --command "run.sh ..." --out exp/RESULTS.md

Reads EXP/<run>/train_summary.json, EXP/<run>/decode_{greedy,lm}/{dev,test}/results.json
(``speechfm decode``) and DATA/lm_<lang>/oov.json when present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SYSTEMS = {"phoneme": "phoneme-pretrained (Whistle), shared phone rows copied",
           "subword": "subword-pretrained, new BPE head",
           "ssl": "w2v-BERT-pretrained, new phone head",
           "scratch": "from scratch (phones)"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(res: dict | None, *names: str) -> str:
    if res is None:
        return "-"
    for name in names:
        entry = res["overall"].get(name)
        if entry:
            return f"{entry['percent']:.2f}"
    return "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--run", action="append", default=[], help="name:system:lang:minutes")
    p.add_argument("--pretrained", action="append", default=[])
    p.add_argument("--command", default="")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    lines = ["# mini_cv_lang Whistle: crosslingual fine-tuning to unseen languages", ""]
    if args.command:
        lines += [f"Command: `{args.command}` (in `egs/mini_cv_lang/whistle`)", ""]
    lines += ["## Unseen languages",
              "",
              "PER: phone error rate of greedy / prefix-beam (4) CTC search; WER: greedy (subword "
              "system only) and through the lexicon + word 3-gram LM graph.", "",
              "| lang | minutes | system | updates | dev PER % greedy | test PER % greedy | "
              "test PER % beam | test WER % greedy (CER) | dev WER % LM | test WER % LM |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    commands = []
    for spec in args.run:
        name, system, lang, minutes = spec.split(":")
        d = args.exp / name
        summary = _load(d / "train_summary.json") or {}
        g = {s: _load(d / "decode_greedy" / s / "results.json") for s in ("dev", "test")}
        lm = {s: _load(d / "decode_lm" / s / "results.json") for s in ("dev", "test")}
        beam = _load(d / "decode_beam" / "test" / "results.json")
        phones = system != "subword"
        lines.append(
            f"| {lang} | {minutes} | {SYSTEMS.get(system, system)} | {summary.get('steps', '-')} | "
            f"{_pct(g['dev'], 'per') if phones else 'n/a'} | "
            f"{_pct(g['test'], 'per') if phones else 'n/a'} | "
            f"{_pct(beam, 'per') if phones else 'n/a'} | "
            f"{'n/a' if phones else _pct(g['test'], 'wer') + ' (CER ' + _pct(g['test'], 'cer') + ')'} | "
            f"{_pct(lm['dev'], 'wer')} | {_pct(lm['test'], 'wer')} |")
        if summary.get("command"):
            commands.append(f"- {name}: `{summary['command']}`")
    lines += ["", "PER is not defined for the subword system (its units are BPE pieces); a phone "
              "system's greedy output has no words, so its WER needs the lexicon.", ""]

    lines += ["## The pretrained models on the ten seen languages", "",
              "Greedy search, and words through each language's lexicon + word 3-gram LM "
              "(phone model: espeak-ng lexicon; subword model: each word spelled in BPE).", "",
              "| model | split | PER % greedy | CER % greedy | WER % greedy | WER % LM |",
              "|---|---|---|---|---|---|"]
    for name in args.pretrained:
        for split in ("dev", "test"):
            res = _load(args.exp / name / "decode_greedy" / split / "results.json")
            lm = _load(args.exp / name / "decode_lm" / split / "results.json")
            lines.append(f"| {name} | {split} | {_pct(res, 'per')} | {_pct(res, 'cer')} | "
                         f"{_pct(res, 'wer')} | {_pct(lm, 'wer')} |")
        summary = _load(args.exp / name / "train_summary.json") or {}
        if summary.get("command"):
            commands.append(f"- {name}: `{summary['command']}`")
    oov = sorted(args.data.glob("lm_*/oov.json"))
    if oov:
        lines += ["", "## OOV rates of the word LMs' lexicons", "",
                  "| lang | split | OOV tokens | tokens | OOV % |", "|---|---|---|---|---|"]
        for path in oov:
            for split, (n, total) in (_load(path) or {}).items():
                lines.append(f"| {path.parent.name[3:]} | {split} | {n} | {total} | "
                             f"{100 * n / max(total, 1):.2f} |")
    lines += ["", "## Commands", "", *commands, ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
