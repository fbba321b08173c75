#!/usr/bin/env python3
"""Write RESULTS.md of the ssl task: one table comparing every fine-tuned and probe model
(pretrained vs scratch/random encoder, per label budget), the pretraining run, and each
run's command.

    python local/write_ssl_results.py --pretrain-dir exp/w2v_bert \
        --system ft_pretrained_80:80:exp/ft_pretrained_80 [--system NAME:BUDGET:DIR ...] \
        [--decode greedy] [--splits dev,test] --out exp/RESULTS.md

Reads PRETRAIN/train_summary.json, DIR/train_summary.json and DIR/run_command.txt (written
by run.sh's training stages) and DIR/decode_<decode>/<split>/results.json (``speechfm decode``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIBE = {"ft_pretrained": "fine-tuned, pretrained encoder",
            "ft_scratch": "fine-tuned, random encoder (from scratch)",
            "probe_pretrained": "linear probe, frozen pretrained encoder",
            "probe_random": "linear probe, frozen random encoder"}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"write_ssl_results.py: {path} is missing (run the stage that writes it)")
    return json.loads(path.read_text(encoding="utf-8"))


def _pct(results: dict, name: str) -> str:
    entry = results["overall"].get(name)
    return f"{entry['percent']:.2f}" if entry else ""


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _pretrain_lines(pretrain_dir: Path) -> list[str]:
    s = _read(pretrain_dir / "train_summary.json")
    cfg = s.get("config", {})
    valid = s.get("final_valid_last_weights") or {}
    lines = [f"- w2v-BERT pretraining ({s.get('model_size', cfg.get('model_size'))}, "
             f"{s['num_params'] / 1e6:.2f} M parameters) on {s['train_data']['utterances']} "
             f"unlabelled utterances ({s['train_data']['hours']:.3f} h): {s['steps']} updates in "
             f"{s['train_seconds'] / 60:.1f} min (stopped by {s['stop_reason']})"
             + (f", encoder initialised from `{cfg['init_from']}`" if cfg.get("init_from") else "")]
    if valid:
        lines.append(f"- final dev (last weights): contrastive accuracy "
                     f"{_fmt(valid.get('contrastive_acc'))}, MLM accuracy {_fmt(valid.get('mlm_acc'))}, "
                     f"code perplexity {_fmt(valid.get('code_perplexity'), '.1f')}, loss "
                     f"{_fmt(valid.get('loss'))}")
    else:
        lines.append("- final dev: not validated (no dev set)")
    lines.append(f"- pretraining command: `{s['command']}`")
    run_cmd = pretrain_dir / "run_command.txt"
    if run_cmd.is_file():
        lines.append(f"- recipe command: `{run_cmd.read_text(encoding='utf-8').strip()}`")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-dir", required=True, type=Path)
    p.add_argument("--system", required=True, action="append", default=[],
                   help="NAME:BUDGET:DIR of a fine-tuned or probe model; repeatable, table order")
    p.add_argument("--decode", default="greedy", help="decoding: reads DIR/decode_<this>/")
    p.add_argument("--splits", default="dev,test")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--title", default="mini_cv_lang: self-supervised pretraining (w2v-BERT) vs "
                                      "training from scratch, CTC on labelled subsets")
    args = p.parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]

    try:
        rows, commands = [], []
        pretrain_cmd = args.pretrain_dir / "run_command.txt"
        recipe_cmd = pretrain_cmd.read_text(encoding="utf-8").strip() if pretrain_cmd.is_file() else None
        for spec in args.system:
            name, budget, directory = spec.split(":", 2)
            d = Path(directory)
            s = _read(d / "train_summary.json")
            res = {split: _read(d / f"decode_{args.decode}" / split / "results.json") for split in splits}
            kind = next((v for k, v in DESCRIBE.items() if name.startswith(k)), name)
            if "_L" in name and name.startswith("probe_"):
                kind += f", first {name.rsplit('_L', 1)[1]} layers"
            cells = [f"{name}", kind, budget, f"{s['train_data']['hours']:.3f}",
                     f"{s['steps']}", f"{s['train_seconds'] / 60:.1f}"]
            cells += [_pct(res[split], m) for split in splits for m in ("cer", "wer")]
            rows.append("| " + " | ".join(cells) + " |")
            run_cmd = d / "run_command.txt"
            cmd = run_cmd.read_text(encoding="utf-8").strip() if run_cmd.is_file() else None
            # the run.sh command line only where it is not the pretraining's
            commands.append(f"- {name}: `{s['command']}`"
                            + (f" (from `{cmd}`)" if cmd and cmd != recipe_cmd else ""))
        pretrain = _pretrain_lines(args.pretrain_dir)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1

    header = ["system", "encoder", "budget (utts/lang)", "hours", "updates", "min"]
    header += [f"{split} {m} %" for split in splits for m in ("CER", "WER")]
    lines = [f"# {args.title}", "",
             "Generated by `local/write_ssl_results.py` from the runs' `train_summary.json` and the "
             "decode `results.json` files; every number below comes from the run it describes.",
             "Every fine-tune and probe is the same CTC model (the pretrained model's encoder "
             "architecture + a linear head), the same config and budget; only the encoder's "
             "starting weights differ (pretrained, or a random-weight twin).", "",
             "## Pretraining", "", *pretrain, "",
             f"## Error rates ({args.decode} search, no language model)", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|", *rows, "",
             "## Commands", "", *commands, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
