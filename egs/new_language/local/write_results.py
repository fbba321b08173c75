#!/usr/bin/env python3
"""The tables of egs/new_language/RESULTS.md from what run.sh left in EXP.

    python local/write_results.py --exp exp --data data --lang uk --related ru \
        --amounts "10 30" --festvox-amounts "5 15 30" --base DIR --out RESULTS.md --command CMD

Every figure is read from the runs' files: EXP/<run>/eval/{dev,test}/results.json (CER and
WER of ``speechfm finetune``'s evaluation), EXP/<run>/train/train_summary.json (updates,
minutes, stop reason), EXP/<run>/pretrain/train_summary.json (continued pretraining),
EXP/<run>/data/data.json (the training data) and EXP/base_<task>/test/results.json (the base
without adaptation). A run that is missing shows as "-". The tables go between the
``<!-- tables: begin/end -->`` markers, so the prose around them is kept on a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SYSTEMS = (("ft", "fine-tune only"), ("cpt", "continued pretraining, then fine-tune"),
           ("multi", "multilingual fine-tune (+ {related})"))


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _rate(results: dict | None, metric: str) -> str:
    if not results:
        return "-"
    return f"{results['overall'][metric]['percent']:.1f}"


def _eval(run: Path, split: str) -> dict | None:
    return _json(run / "eval" / split / "results.json")


def _train(run: Path, folder: str = "train") -> str:
    s = _json(run / folder / "train_summary.json")
    if not s:
        return "-"
    return f"{s['steps']} ({s['train_seconds'] / 60:.1f} min, {s['stop_reason']})"


def _train_audio(run: Path) -> str:
    info = _json(run / "data" / "data.json")
    if not info:
        return "-"
    hours = (info.get("sets") or {}).get("train", {}).get("hours")
    related = (info.get("related") or {}).get("taken", {}).get("hours")
    if hours is None:
        return "-"
    text = f"{60 * hours:.1f} min"
    if related:
        text += f" (incl. {60 * related:.1f} min related)"
    return text


def synthetic_table(exp: Path, lang: str, related: str, amounts: list[str]) -> list[str]:
    rows = [f"### {lang}: synthetic speech (voice- and text-disjoint dev and test)", "",
            "| labels | system | dev CER % | test CER % | test WER % | fine-tuning updates "
            "(time, stop) | training audio |", "|---|---|---|---|---|---|---|"]
    base = _json(exp / f"base_{lang}" / "test" / "results.json")
    rows.append(f"| 0 | the base, no adaptation | - | {_rate(base, 'cer')} | {_rate(base, 'wer')} "
                "| - | - |")
    for m in amounts:
        for key, name in SYSTEMS:
            run = exp / f"{lang}_{m}min_{key}"
            rows.append(f"| {m} min | {name.format(related=related)} | "
                        f"{_rate(_eval(run, 'dev'), 'cer')} | {_rate(_eval(run, 'test'), 'cer')} | "
                        f"{_rate(_eval(run, 'test'), 'wer')} | {_train(run)} | {_train_audio(run)} |")
    pre = next((exp / f"{lang}_{m}min_cpt" for m in amounts
                if (exp / f"{lang}_{m}min_cpt" / "pretrain" / "train_summary.json").is_file()), None)
    if pre is not None:
        rows += ["", f"Continued pretraining (w2v-BERT, in `{pre}/pretrain`, reused by every "
                 f"amount): {_train(pre, 'pretrain')} updates."]
    diag = {name: _json(exp / "diag_cpt" / name / "results.json") for name in ("base", "cpt")}
    if all(diag.values()):
        rows += ["", f"What continued pretraining did to the encoder: the base's own CTC head "
                 f"on {related} dev utterances the base was trained on ({diag['base']['num_scored']} "
                 f"utterances): {_rate(diag['base'], 'cer')} % CER on the base's encoder, "
                 f"{_rate(diag['cpt'], 'cer')} % on the continued one (`EXP/diag_cpt`)."]
    return rows


def real_tables(exp: Path, amounts: list[str]) -> list[str]:
    rows = ["### Real read Russian (festvox_ru, one speaker: text-disjoint, not speaker-disjoint)",
            "", "| training minutes | system | dev CER % | test CER % | test WER % | updates "
            "(time, stop) |", "|---|---|---|---|---|---|"]
    base = _json(exp / "base_festvox" / "test" / "results.json")
    rows.append(f"| 0 | the base, no adaptation | - | {_rate(base, 'cer')} | {_rate(base, 'wer')} | - |")
    for m in amounts:
        for key, name in (("ft", "base fine-tuned"), ("scratch", "from scratch")):
            run = exp / f"festvox_{m}min_{key}"
            rows.append(f"| {m} | {name} | {_rate(_eval(run, 'dev'), 'cer')} | "
                        f"{_rate(_eval(run, 'test'), 'cer')} | {_rate(_eval(run, 'test'), 'wer')} | "
                        f"{_train(run)} |")
    test = _json(exp / f"festvox_{amounts[0]}min_ft" / "data" / "data.json") if amounts else None
    held = (test or {}).get("sets") or {}
    if "test" in held:
        rows += ["", f"Held out: test {held['test']['utterances']} sentences "
                 f"({60 * held['test']['hours']:.1f} min), dev {held['dev']['utterances']} "
                 f"({60 * held['dev']['hours']:.1f} min)."]
    rows += ["", "### Real English digits (FSDD, speaker-disjoint: test theo + yweweler, dev "
             "nicolas)", "", "| system | dev CER % | test CER % | test WER % | updates (time, stop) |",
             "|---|---|---|---|---|"]
    base = _json(exp / "base_fsdd" / "test" / "results.json")
    rows.append(f"| the base, no adaptation | - | {_rate(base, 'cer')} | {_rate(base, 'wer')} | - |")
    for key, name in (("ft", "base fine-tuned"), ("scratch", "from scratch")):
        run = exp / f"fsdd_{key}"
        rows.append(f"| {name} | {_rate(_eval(run, 'dev'), 'cer')} | {_rate(_eval(run, 'test'), 'cer')} "
                    f"| {_rate(_eval(run, 'test'), 'wer')} | {_train(run)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    from speechfm.train import splice_tables

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--lang", required=True)
    p.add_argument("--related", required=True)
    p.add_argument("--amounts", required=True)
    p.add_argument("--festvox-amounts", default="")
    p.add_argument("--base", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--command", default="./run.sh")
    args = p.parse_args(argv)

    body = [f"Command: `{args.command}` (base model `{args.base}`). Every run: "
            "`speechfm finetune` with the same seed; its own RESULTS.md, PLAN.md and "
            "curves are in its EXP folder.", "",
            *synthetic_table(args.exp, args.lang, args.related, args.amounts.split()), ""]
    if args.festvox_amounts.strip():
        body += [*real_tables(args.exp, args.festvox_amounts.split()), ""]
    path = splice_tables(args.out, "\n".join(body).rstrip(),
                         "# A new language in one command: results")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
