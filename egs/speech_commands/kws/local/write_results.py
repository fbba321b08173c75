#!/usr/bin/env python3
"""Write the KWS RESULTS.md tables from the run's outputs.

    python local/write_results.py --exp exp --data data --out RESULTS.md --command "./run.sh"

Reads every EXP/<group>/<run>/train_summary.json (written by recipes/ast_adapters) and
EXP/<group>/<run>/test/results.json (stage 7, ``speechfm classify``), and the ASiT runs'
EXP/<asit*>/train_summary.json.  Missing runs are left out of the tables (and listed).
The best model (for the demo) is the run with the best dev accuracy among all of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = {
    "linear": "linear probe (head only)",
    "full": "full fine-tuning",
    "full_lr1e-3": "full fine-tuning, lr 1e-3",
    "full_lr1e-3_mixup": "full fine-tuning, lr 1e-3, mixup 0.3",
    "bitfit": "BitFit",
    "adapter_pfeiffer_seq": "bottleneck adapter, Pfeiffer, sequential",
    "adapter_pfeiffer_par": "bottleneck adapter, Pfeiffer, parallel",
    "adapter_houlsby_seq": "bottleneck adapter, Houlsby, sequential",
    "adapter_houlsby_par": "bottleneck adapter, Houlsby, parallel",
    "conv_adapter": "Conformer-convolution adapter, Pfeiffer, parallel",
    "lora": "LoRA (W_q, W_v)",
    "prompt": "deep prompt tuning",
    "prefix": "prefix tuning",
}
BACKBONES = {"asit_recon": "masked reconstruction only",
             "asit_recon_local": "reconstruction + local distillation",
             "asit": "reconstruction + local + global (ASiT)"}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_row(run: Path) -> dict | None:
    s = _json(run / "train_summary.json")
    t = _json(run / "test" / "results.json")
    if s is None or t is None:
        return None
    chosen = s.get("average", {}).get("chosen")
    dev = (s.get("average", {}).get("candidates") or {}).get(chosen) or s.get(
        "final_valid_last_weights") or {}
    return {
        "trainable": s.get("trainable_parameters", s.get("num_trainable_params")),
        "total": s.get("total_parameters", s.get("num_params")),
        "minutes": s["train_seconds"] / 60,
        "steps": s["steps"],
        "lr": s["config"]["optimizer"]["lr"],
        "train_clips": s["train_data"]["utterances"],
        "dev": dev.get("accuracy"),
        "test": t["accuracy"],
        "test_macro": t["macro_accuracy"],
        "test_n": t["num_utts"],
        "weights": chosen,
    }


def _f(v, spec=".1f") -> str:
    return "–" if v is None else format(v, spec)


def petl_table(exp: Path, group: str, order: list[str]) -> tuple[list[str], list[str]]:
    lines = ["| method | trainable params | % of model | lr | updates | train min "
             "| dev acc % | test acc % | test macro % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    missing = []
    for m in order:
        r = run_row(exp / group / m)
        if r is None:
            missing.append(f"{group}/{m}")
            continue
        lines.append(f"| {NAMES.get(m, m)} | {r['trainable']:,} | "
                     f"{100 * r['trainable'] / r['total']:.2f} | {r['lr']:g} | {r['steps']} | "
                     f"{r['minutes']:.1f} | {_f(r['dev'])} | {_f(r['test'])} | "
                     f"{_f(r['test_macro'])} |")
    return lines, missing


def splice(path: Path, body: str, title: str) -> None:
    """Write ``body`` between the table markers of ``path`` (the prose around them, written
    by hand, stays), or a new file with ``title``."""
    from speechfm.train import splice_tables

    splice_tables(path, body, title)


def demo_lines(model_dir: Path, test_cuts: Path, per_label: int = 1) -> list[str]:
    """``speechfm.load(model_dir).classify()`` on one real test recording per label."""
    if not test_cuts.is_file():
        return []
    import speechfm
    from speechfm.train.runner import load_cuts

    model = speechfm.load(model_dir)
    picked: dict[str, str] = {}
    for cut in load_cuts(test_cuts):
        label = cut.supervisions[0].text
        if label not in picked:
            picked[label] = cut.recording.sources[0].source
    lines = ["`speechfm.load(best).classify(path, top_k=3)` on one test recording per label:",
             "", "| recording | reference | top 3 (label score) |", "|---|---|---|"]
    for label, path in sorted(picked.items()):
        top = model.classify(path, top_k=3)
        shown = ", ".join(f"{name} {score:.2f}" for name, score in top)
        lines.append(f"| `{Path(path).name}` | {label} | {shown} |")
    return lines + [""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="exp", type=Path)
    p.add_argument("--data", default="data", type=Path)
    p.add_argument("--out", default="RESULTS.md", type=Path)
    p.add_argument("--command", default="./run.sh")
    args = p.parse_args()
    exp = args.exp
    out: list[str] = []
    missing: list[str] = []

    methods = [m for m in NAMES if (exp / "petl" / m).is_dir()]
    out += ["## 1. Every PETL method on the ASiT-pretrained backbone (12-class KWS, full "
            "training split)", ""]
    lines, miss = petl_table(exp, "petl", methods)
    out += lines + [""]
    missing += miss
    long_runs = sorted(p.name for p in (exp / "long").glob("*") if p.is_dir())
    if long_runs:
        lines, miss = petl_table(exp, "long", long_runs)
        out += ["The same recipe with a longer budget (every other setting as above):", ""]
        out += lines + [""]
        missing += miss

    out += ["## 2. ASiT-pretrained vs random (scratch) initialisation", "",
            "| method | ASiT backbone: dev / test acc % | random backbone: dev / test acc % |",
            "|---|---:|---:|"]
    for m in sorted(p.name for p in (exp / "scratch").glob("*") if p.is_dir()):
        a, s = run_row(exp / "petl" / m), run_row(exp / "scratch" / m)
        if a is None or s is None:
            missing.append(f"scratch/{m}")
            continue
        out.append(f"| {NAMES.get(m, m)} | {_f(a['dev'])} / {_f(a['test'])} | "
                   f"{_f(s['dev'])} / {_f(s['test'])} |")
    out.append("")

    shots = sorted({int(p.name.split("shot_")[0]) for p in (exp / "fewshot").glob("*shot_*")})
    fs_methods = sorted({p.name.split("shot_", 1)[1] for p in (exp / "fewshot").glob("*shot_*")},
                        key=lambda m: list(NAMES).index(m) if m in NAMES else 99)
    out += ["## 3. Few-shot (examples per class from the training split; ASiT backbone)", "",
            "| examples / class | " + " | ".join(NAMES.get(m, m) for m in fs_methods) + " |",
            "|---:|" + "---:|" * len(fs_methods)]
    for k in shots:
        cells = []
        for m in fs_methods:
            r = run_row(exp / "fewshot" / f"{k}shot_{m}")
            cells.append("–" if r is None else f"{r['test']:.1f}")
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    out += ["", "Test accuracy %; every row trains the same number of updates.", ""]

    out += ["## 4. ASiT loss ablation (same pretraining budget; then the same fine-tuning)", "",
            "| pretraining losses | final dev loss terms | linear probe test acc % "
            "| full fine-tuning (lr 1e-3) test acc % |", "|---|---|---:|---:|"]
    for b, name in BACKBONES.items():
        s = _json(exp / b / "train_summary.json")
        if s is None:
            missing.append(b)
            continue
        v = s.get("final_valid_last_weights") or {}
        terms = ", ".join(f"{k} {v[k]:.3f}" for k in ("recon_loss", "local_loss", "global_loss")
                          if k in v)
        cells = []
        for m in ("linear", "full_lr1e-3"):
            run = exp / ("petl" if b == "asit" else "ablation") / (m if b == "asit" else f"{b}_{m}")
            r = run_row(run)
            cells.append("–" if r is None else f"{r['test']:.1f}")
        out.append(f"| {name} ({s['steps']} updates, {s['train_seconds'] / 60:.1f} min) | "
                   f"{terms or '–'} | {cells[0]} | {cells[1]} |")
    out.append("")

    rows = [("spectrogram transformer (ast_tiny), ASiT backbone, full fine-tuning, lr 1e-3, "
             "mixup 0.3", exp / "long" / "full_lr1e-3_mixup"),
            ("spectrogram transformer (ast_tiny), random backbone, full fine-tuning, lr 1e-3",
             exp / "scratch" / "full_lr1e-3"),
            ("Conformer classifier (classifier_kws), random weights, lr 1e-3, mixup 0.3",
             exp / "conformer" / "full_lr1e-3_mixup")]
    out += ["## 5. Encoder architecture: the spectrogram transformer vs the shared Conformer", "",
            "| model | params | updates | train min | dev acc % | test acc % | test macro % |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, run in rows:
        r = run_row(run)
        if r is None:
            missing.append(str(run.relative_to(exp)))
            continue
        out.append(f"| {name} | {r['total']:,} | {r['steps']} | {r['minutes']:.1f} | "
                   f"{_f(r['dev'])} | {_f(r['test'])} | {_f(r['test_macro'])} |")
    out.append("")

    best = None
    for run in sorted(exp.glob("*/*")):
        r = run_row(run)
        if r is not None and r["dev"] is not None and (best is None or r["dev"] > best[1]["dev"]):
            best = (run, r)
    if best:
        out += [f"Best model by dev accuracy: `{best[0]}` — dev {best[1]['dev']:.1f} %, "
                f"test {best[1]['test']:.1f} % ({best[1]['test_n']:.0f} clips of speakers "
                "never seen in training or pretraining).", ""]
        out += demo_lines(best[0] / "final", args.data / "sc12" / "cuts_test.jsonl.gz")
    if missing:
        out += ["Not run (yet): " + ", ".join(f"`{m}`" for m in missing), ""]
    out += [f"Command: `{args.command}` (from `egs/speech_commands/kws`).", ""]
    body = "\n".join(out)
    splice(args.out, body, "# Keyword spotting results")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
