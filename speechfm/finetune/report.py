"""What ``speechfm finetune`` prints about its data, and the RESULTS.md it writes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

__all__ = ["data_lines", "results_rows", "write_results"]


def duration(hours: float) -> str:
    """``1.25 h``, ``12.5 min`` or ``40.2 s``."""
    if hours >= 1:
        return f"{hours:.2f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.1f} s"


def _size(s: dict[str, Any]) -> str:
    speakers = f", {s['speakers']} speakers" if s.get("speakers") is not None else ""
    return f"{s['utterances']} utts, {duration(s['hours'])}{speakers}"


def data_lines(info: dict[str, Any]) -> list[str]:
    """The data summary, one line each (inputs, bad items by reason, the sets used)."""
    lines = []
    for name, s in info["inputs"].items():
        bad = ", ".join(f"{r} {n}" for r, n in s["bad_by_reason"].items())
        lines.append(f"{name}: {s['source']} ({s['format']}): {s['items']} items, {s['bad']} "
                     f"bad{f' ({bad})' if bad else ''} and left out; kept {_size(s)}")
    if info.get("split"):
        lines.append(f"held-out split: {info['split']['rule']}")
    for name, s in (info.get("sets") or {}).items():
        lines.append(f"  {name}: {_size(s)}")
    if info.get("unlabelled_held_out_recordings_left_out"):
        lines.append(f"unlabelled recordings of dev/test left out of pretraining: "
                     f"{info['unlabelled_held_out_recordings_left_out']}")
    if info.get("dropped_after_check"):
        lines.append(f"left out after the check (G2P / the foundation's tokenizer): "
                     f"{len(info['dropped_after_check'])}")
    return lines


def results_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows ``| set | utts | CER % | WER % |`` (PER for IPA targets)."""
    first = next(iter(results.values()))
    names = list(first["overall"])
    rows = ["| set | utts | " + " | ".join(f"{n.upper()} %" for n in names) + " |",
            "|---|---|" + "---|" * len(names)]
    for set_name, r in results.items():
        overall = r["overall"]
        utts = next(iter(overall.values()))["num_utts"] if overall else 0
        rows.append(f"| {set_name} | {utts} | "
                    + " | ".join(f"{overall[n]['percent']:.2f}" for n in names) + " |")
    return rows


def _summary(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _stage_line(name: str, s: dict[str, Any]) -> str:
    metric = s.get("metric") or {}
    best = metric.get("best_during_training")
    chosen = (s.get("average") or {}).get("chosen")
    return (f"| {name} | {s['steps']} | {s.get('stop_reason')} | {s['train_seconds'] / 60:.1f} | "
            f"{metric.get('name', '')} {'' if best is None else f'{best:.4f}'} | {chosen} | "
            f"{s.get('skipped_cuts', 0)} |")


def write_results(exp: Path, options, base, plan, info: dict[str, Any],
                  results: dict[str, dict[str, Any]]) -> Path:
    """Write EXP/RESULTS.md: dev/test error rates, how to use the model, the command, the
    data summary, the settings and the stages."""
    from speechfm.decode.asr import format_results_table

    command = options.command or "speechfm finetune " + " ".join(
        shlex.quote(f"--{k.replace('_', '-')}={v}") for k, v in options.to_dict().items()
        if v not in (None, False) and k != "command")
    lang_kw = f', lang="{options.lang}"' if plan.recipe == "lda" else ""
    targets = "phones (PER; WER over phone words)" if plan.targets == "ipa" else "text"
    lines = [
        f"# {options.lang}: fine-tuned from {base.path.name} ({plan.method})", "",
        "## Results", "",
        f"Greedy search, the exported model (`{exp / 'final'}`), scored against the {targets} "
        "transcripts:", "",
        *results_rows(results), "",
        *[line for name, r in results.items()
          for line in (format_results_table(r, title=f"{name} (`{r['cuts']}`):").rstrip(), "")],
        "Per-utterance alignments: `eval/<set>/errs-*.txt`; hypotheses: `eval/<set>/hyps.txt`.", "",
        "```python",
        "import speechfm",
        f'print(speechfm.load("{exp / "final"}").transcribe("audio.wav"{lang_kw}))',
        "```", "",
        "## Command", "", "```", command, "```", "",
        "## Data", "",
        *[f"- {line.strip()}" for line in data_lines(info)],
        "- every item left out is listed by set, id and reason in `data/bad_items.tsv`", "",
        "## Settings", "",
        plan.table(), "",
        "## Stages", "",
        "| stage | updates | stopped by | minutes | best dev | exported weights | skipped cuts |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, folder in (("pretrain (w2v-BERT)", "pretrain"), (f"train (recipes/{plan.recipe})", "train")):
        s = _summary(exp / folder / "train_summary.json")
        if s is not None:
            lines.append(_stage_line(name, s))
    s = _summary(exp / "train" / "train_summary.json")
    if s is not None:
        lines += ["", f"Hardware: {s.get('hardware')}.", ""]
    path = exp / "RESULTS.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
