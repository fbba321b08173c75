#!/usr/bin/env python3
"""Write RESULTS.md for a CTC or transducer run: per-group error rates of each decoded
split (one table per decoding: greedy, beam, streaming, ...), plus the run.

    python local/write_results.py --exp-dir exp/ctc --decode-dir exp/ctc/decode_greedy \
        [--decode-dir exp/ctc/decode_beam ...] --splits dev,test --out exp/ctc/RESULTS.md \
        [--title "..."] [--run-command FILE]

Reads EXP/train_summary.json (written by the training recipe, recipes/<method>/train.py) and
DECODE/<split>/results.json (written by ``speechfm decode``). Shared by egs/mini_cv_lang/asr
and egs/fsdd/asr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pct(entry: dict | None, name: str) -> str:
    if not entry or name not in entry:
        return ""
    return f"{entry[name]['percent']:.2f}"


def _volume(cfg: dict) -> str:
    db = cfg.get("volume_perturb_db", 0.0) or 0.0
    return f"+-{db:g} dB" if db > 0 else "off"


def _table(results: dict[str, dict], splits: list[str], label: str) -> str:
    """One row per group, columns <split> <RATE> for every split and rate."""
    names = [n for n in ("cer", "per", "wer") if any(n in r["overall"] for r in results.values())]
    groups = sorted({g for r in results.values() for g in r["groups"]})
    header = [label] + [f"{s} {n.upper()} %" for s in splits for n in names] + [f"{s} utts" for s in splits]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    rows = [(g, {s: results[s]["groups"].get(g) for s in splits}) for g in groups]
    rows.append(("**all**", {s: results[s]["overall"] for s in splits}))
    for name, per_split in rows:
        cells = [name]
        cells += [_pct(per_split[s], n) for s in splits for n in names]
        cells += [str(next(iter(per_split[s].values()))["num_utts"]) if per_split[s] else ""
                  for s in splits]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _describe(result: dict) -> str:
    """"greedy search", "modified beam search (beam 4)", "streaming greedy search, chunk 16"."""
    transducer = result.get("family") == "transducer"
    if result.get("graph"):
        g = result["graph"]
        what = "lexicon + word n-gram LM" if g.get("kind") == "tlg" else "token n-gram LM"
        return (f"{what} graph search (kaldi-decoder, acoustic scale "
                f"{g.get('acoustic_scale', 1.0)}, beam {g.get('beam', 16.0)})"
                + (", one LM per language" if result.get("merged_from") else ""))
    if result["method"] == "beam":
        name = ("modified beam search" if transducer else "prefix beam search") + f" (beam {result['beam']})"
    else:
        name = "greedy search"
    if result.get("streaming"):
        left = result.get("left_context")
        name = (f"streaming {name}: chunks of {result.get('chunk_size')} encoder frames"
                + (f", left context {left}" if left not in (None, -1) else ", all left context"))
    elif result.get("chunk_size") not in (None, -1):
        name += f", chunked attention ({result['chunk_size']} frames)"
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, type=Path)
    p.add_argument("--decode-dir", required=True, type=Path, action="append",
                   help="a decode output folder (DIR/<split>/results.json); repeatable")
    p.add_argument("--splits", default="dev,test")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--title", default="CTC results")
    p.add_argument("--run-command", type=Path, default=None,
                   help="file holding the run.sh command line (the training stage writes EXP/run_command.txt)")
    args = p.parse_args(argv)

    summary_path = args.exp_dir / "train_summary.json"
    if not summary_path.is_file():
        print(f"write_results.py: {summary_path} is missing (train first)", file=sys.stderr)
        return 1
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    splits = [s for s in args.splits.split(",") if s]
    decodes = []
    for decode_dir in args.decode_dir:
        results = {}
        for split in splits:
            path = decode_dir / split / "results.json"
            if not path.is_file():
                print(f"write_results.py: {path} is missing (decode first)", file=sys.stderr)
                return 1
            results[split] = json.loads(path.read_text(encoding="utf-8"))
        decodes.append(results)
    results = decodes[0]
    first = results[splits[0]]
    label = {"lang": "language", "speaker": "speaker"}.get(first["group_by"], "set")
    run_cmd = None
    if args.run_command is not None and args.run_command.is_file():
        run_cmd = args.run_command.read_text(encoding="utf-8").strip()

    cfg = summary["config"]
    tok = summary["tokenizer"]
    avg = summary["average"]
    lines = [f"# {args.title}", "",
             "Generated by `local/write_results.py` from `train_summary.json` and the decode "
             "`results.json` files; every number below comes from the run it describes.", ""]
    lines += ["## Run", ""]
    if run_cmd:
        lines.append(f"- recipe command: `{run_cmd}`")
    lines.append(f"- training command: `{summary['command']}`")
    lines.append(f"- seed: {summary['seed']}")
    lines.append(f"- hardware: {summary['hardware']}")
    lines.append(f"- training time: {summary['train_seconds'] / 60:.1f} min wall clock, "
                 f"{summary['steps']} optimizer steps ({summary['epochs_completed']} full epochs; "
                 f"stopped by {summary['stop_reason']}), {summary['skipped_updates']} skipped "
                 f"updates, {summary['skipped_cuts']} unreadable cuts")
    enc = cfg["model"].get("encoder", {})
    kind = "transducer (conformer encoder, stateless predictor, joiner)" if cfg[
        "model_size"].startswith("transducer") else "CTC conformer"
    lines.append(f"- model: {kind}, {summary['num_params'] / 1e6:.2f} M parameters "
                 f"({cfg['model_size']} with overrides {json.dumps(cfg['model'], ensure_ascii=False)})"
                 if enc or cfg["model"] else
                 f"- model: {kind} {cfg['model_size']}, {summary['num_params'] / 1e6:.2f} M parameters")
    if cfg["model_size"].startswith("transducer"):
        loss = cfg.get("transducer_loss", {})
        lines.append("- loss: " + ", ".join(f"{k} {v}" for k, v in loss.items()))
    # the encoder's setting (model.encoder.specaugment), or the model's in older summaries
    specaug = cfg["model"].get("encoder", {}).get("specaugment", cfg["model"].get("specaugment"))
    lines.append(f"- units: {tok['kind']} tokenizer, V={tok['vocab_size']} ({summary['targets']} targets)")
    lines.append(f"- optimisation: {cfg['optimizer']['kind']} lr {cfg['optimizer']['lr']}, "
                 f"{cfg['scheduler']['kind']} schedule (warmup {cfg['scheduler']['warmup_steps']}), "
                 f"{cfg['max_duration']} s of audio per batch, accum_grad {cfg['accum_grad']}, "
                 f"speed perturbation {'on' if cfg['speed_perturb'] else 'off'}, "
                 f"volume perturbation {_volume(cfg)}, SpecAugment {'off' if specaug is False else 'on'}")
    cand = "; ".join(
        f"{name}: " + ", ".join(f"{k.upper()} {100 * v:.2f}%" for k, v in r.items()
                                if k in ("cer", "per", "wer"))
        for name, r in avg["candidates"].items())
    lines.append(f"- exported weights: **{avg['chosen']}**" + (f" (dev greedy: {cand})" if cand else ""))
    lines += ["", "## Data", "", "| split | utterances | hours |", "|---|---|---|"]
    lines.append(f"| train | {summary['train_data']['utterances']} | {summary['train_data']['hours']:.3f} |")
    for split in splits:
        lines.append(f"| {split} | {results[split]['num_utts']} | {results[split]['hours']:.3f} |")
    for results in decodes:
        lm = "" if results[splits[0]].get("graph") else ", no language model"
        lines += ["", f"## Error rates ({_describe(results[splits[0]])}{lm})", "",
                  _table(results, splits, label)]
        lines.append(f"Decoding {splits[-1]}: {results[splits[-1]]['decode_seconds']:.1f} s "
                     f"(RTF {results[splits[-1]]['rtf']}).")
    curve = summary.get("loss_curve", {}).get("train/loss", [])
    if curve:
        lines += [f"Training loss (per token): {curve[0][1]:.3f} at step {curve[0][0]} -> "
                  f"{curve[-1][1]:.3f} at step {curve[-1][0]}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
