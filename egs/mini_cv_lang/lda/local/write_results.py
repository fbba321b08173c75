#!/usr/bin/env python3
"""Write the LDA RESULTS.md tables from the run's outputs.

    python local/write_results.py --exp exp --data data --head en,es,... --tail ky,tt,sv,id \\
        --out RESULTS.md --command "./run.sh"

Reads EXP/decode/<system>/<split>/<lang>/{final,stream}/results.json (stage 6), each run's
train_summary.json, DATA/split.json, DATA/pl/<lang>_r<k>/stats.json and the foundation's
per-language dev curves (TensorBoard).  Prose around the table markers stays.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from best_adapters import best_runs  # noqa: E402


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _f(v, spec=".1f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def score(exp: Path, system: str, split: str, lang: str, mode: str) -> dict | None:
    """{"wer", "cer"} (percent) of a decoding, or None."""
    r = _json(exp / "decode" / system / split / lang / mode / "results.json")
    if r is None:
        return None
    o = r["overall"]
    return {"wer": o["wer"]["percent"], "cer": o["cer"]["percent"], "n": o["wer"]["num_utts"]}


def hyps(exp: Path, system: str, split: str, lang: str, mode: str) -> dict[str, str] | None:
    path = exp / "decode" / system / split / lang / mode / "hyps.txt"
    if not path.is_file():
        return None
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        out[key] = text
    return out


def system_name(system: str) -> str:
    if system == "foundation":
        return "foundation only"
    if system == "full":
        return "full fine-tuning"
    if system == "merged":
        return "merged model (best adapter per language, or none)"
    if system.startswith("adapter_b"):
        return f"LDA, bottleneck {system[9:]}, labelled only"
    if system.startswith("student_b"):
        size, _, rnd = system[9:].partition("_r")
        return f"LDA, bottleneck {size}, noisy student (round {rnd})"
    return system


def params(exp: Path, system: str, lang: str) -> tuple[int | None, int | None]:
    s = _json(exp / system / lang / "train_summary.json")
    if s is None:
        return None, None
    return s.get("trainable_parameters"), s.get("total_parameters")


def pct(v):
    """A rate as a percentage (None stays None)."""
    return None if v is None else 100 * v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="exp", type=Path)
    p.add_argument("--data", default="data", type=Path)
    p.add_argument("--head", required=True)
    p.add_argument("--tail", required=True)
    p.add_argument("--out", default="RESULTS.md", type=Path)
    p.add_argument("--command", default="./run.sh")
    args = p.parse_args()
    exp, head, tail = args.exp, args.head.split(","), args.tail.split(",")
    out: list[str] = []

    split = _json(args.data / "split.json")
    if split:
        out += ["## Data (training utterances / minutes per language)", "",
                "| part | " + " | ".join(head + tail) + " |",
                "|---|" + "---:|" * (len(head) + len(tail))]
        row = [f"{split['head'][lang][0]} / {split['head'][lang][1]:.1f}" for lang in head]
        row += [f"{split['tail_labelled'][lang][0]} / {split['tail_labelled'][lang][1]:.1f}"
                for lang in tail]
        out.append("| labelled (foundation and adapters) | " + " | ".join(row) + " |")
        pool = ["–"] * len(head) + [f"{split['tail_pool'][lang][0]} / "
                                    f"{split['tail_pool'][lang][1]:.1f}" for lang in tail]
        out += ["| unlabelled pool (noisy student) | " + " | ".join(pool) + " |", ""]

    systems = ["foundation"] + sorted(d.name for d in exp.glob("adapter_b*")) + sorted(
        d.name for d in exp.glob("student_b*")) + ["full", "merged"]
    systems = [s for s in systems if (exp / "decode" / s).is_dir()]
    chosen = best_runs(exp, tail, exp / "decode" / "foundation" / "dev") if (
        exp / "merged").is_dir() else {}
    out += ["## Tail languages: WER / CER % on test (dev WER), final (cascaded) and streaming "
            "passes", "",
            "| language | system | trainable params (% of model) | dev WER final | test WER "
            "final | test CER final | test WER streaming | test CER streaming | rel. CER "
            "reduction (final) | rel. WER reduction (final) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lang in tail:
        base = score(exp, "foundation", "test", lang, "final")
        for system in systems:
            fin = score(exp, system, "test", lang, "final")
            if fin is None:
                continue
            dev = score(exp, system, "dev", lang, "final")
            st = score(exp, system, "test", lang, "stream")
            trainable, total = params(exp, system, lang)
            if system == "merged":
                choice = chosen[lang]
                trainable = choice["params"]
                total = params(exp, choice["system"], lang)[1] if trainable else None
            share = "0" if not trainable and system in ("foundation", "merged") else (
                f"{trainable:,} ({100 * trainable / total:.2f} %)" if trainable else "–")

            def rel(key: str) -> str:
                if base is None or system == "foundation" or not base[key]:
                    return "–"
                return f"{100 * (base[key] - fin[key]) / base[key]:.1f} %"

            out.append(f"| {lang} | {system_name(system)} | {share} | "
                       f"{_f(dev and dev['wer'])} | {fin['wer']:.1f} | {fin['cer']:.1f} | "
                       f"{_f(st and st['wer'])} | {_f(st and st['cer'])} | {rel('cer')} | "
                       f"{rel('wer')} |")
    out.append("")

    out += ["## Head languages: no regression (test WER / CER %, final pass; streaming WER)", "",
            "| language | foundation | merged model |", "|---|---:|---:|"]
    for lang in head:
        cells = []
        for system in ("foundation", "merged"):
            fin = score(exp, system, "test", lang, "final")
            st = score(exp, system, "test", lang, "stream")
            cells.append("–" if fin is None else
                         f"{fin['wer']:.1f} / {fin['cer']:.1f}; {_f(st and st['wer'])}")
        out.append(f"| {lang} | {cells[0]} | {cells[1]} |")
    out.append("")

    if (exp / "merged").is_dir():
        out += ["## The merged model reproduces each language's own best adapter", "",
                "| language | chosen adapter (its dev metric) | identical hypotheses (dev + test, "
                "final + streaming) |", "|---|---|---|"]
        for lang in tail:
            choice = chosen[lang]
            same, total = 0, 0
            for split_name in ("dev", "test"):
                for mode in ("final", "stream"):
                    a = hyps(exp, "merged", split_name, lang, mode)
                    b = hyps(exp, choice["system"], split_name, lang, mode)
                    if a is None or b is None:
                        continue
                    total += len(b)
                    same += sum(a.get(k) == v for k, v in b.items())
            out.append(f"| {lang} | {system_name(choice['system'])} ({choice['metric'].upper()} "
                       f"{100 * choice['dev']:.1f} %) | "
                       f"{same} of {total} |")
        out.append("")

    api = _json(exp / "api_stream" / "results.json")
    if api:
        out += ["## The merged model through the API: `speechfm.load(merged).stream(lang=...)`",
                "", "Test CER / WER %: the API streamed in 250 ms pieces, beside stage 6's "
                "streaming decode of the same model (`speechfm decode --streaming`).", "",
                "| language | API stream | speechfm decode --streaming |", "|---|---:|---:|"]
        for lang in tail:
            a, d = api.get(lang), score(exp, "merged", "test", lang, "stream")
            out.append(f"| {lang} | {_f(a and a['cer'])} / {_f(a and a['wer'])} | "
                       f"{_f(d and d['cer'])} / {_f(d and d['wer'])} |")
        out.append("")

    lid = _json(exp / "lid" / "language_id.json")
    if lid:
        out += ["## Without a language id: the merged model's language-ID head picks the adapter",
                "", f"A {len(lid['languages'])}-language head on the frozen foundation's pooled "
                f"encoder output (`recipes/lda/train_lid.py`, best dev step {lid['best_step']}). "
                "Test CER / WER % of the merged model on each tail language with the language "
                "given and with the head's pick (`speechfm decode --language auto`, final pass), "
                "and the head's accuracy (dev, and on that test set).", "",
                "| language | LID accuracy dev | LID accuracy test | merged, language given | "
                "merged, language from the head |", "|---|---:|---:|---:|---:|"]
        for lang in tail:
            given = score(exp, "merged", "test", lang, "final")
            auto = score(exp, "merged_lid", "test", lang, "final")
            res = _json(exp / "decode" / "merged_lid" / "test" / lang / "final" / "results.json")
            acc = (res or {}).get("language_id", {}).get("accuracy")
            out.append(f"| {lang} | {_f(pct(lid['dev'].get(f'acc_{lang}')))} | {_f(pct(acc))} | "
                       f"{_f(given and given['cer'])} / {_f(given and given['wer'])} | "
                       f"{_f(auto and auto['cer'])} / {_f(auto and auto['wer'])} |")
        out += ["", f"Dev accuracy over all {len(lid['languages'])} languages: "
                f"{100 * lid['dev']['accuracy']:.1f} %.", ""]

    pls = sorted((args.data / "pl").glob("*_r*/stats.json"))
    if pls:
        out += ["## Pseudo-labels (teacher: foundation + the language's supervised adapter, "
                "final pass)", "",
                "| language, round | pool | kept | mean confidence (kept) | teacher CER / WER % "
                "on the pool | on the kept |", "|---|---:|---:|---:|---:|---:|"]
        for path in pls:
            s = _json(path)
            cer_all, wer_all = s.get("all_cer"), s.get("all_wer")
            cer, wer = s.get("cer"), s.get("wer")
            out.append(f"| {path.parent.name} | {s['num_labels']} | {s['num_kept']} | "
                       f"{_f(s.get('kept_mean_confidence'), '.2f')} | "
                       f"{_f(pct(cer_all))} / {_f(pct(wer_all))} | {_f(pct(cer))} / "
                       f"{_f(pct(wer))} |")
        out.append("")

    try:
        from speechfm.train import read_scalars

        tags = read_scalars(exp / "foundation")
    except (FileNotFoundError, OSError):
        tags = {}
    curves = {lang: tags.get(f"valid/cer_{lang}") for lang in head + tail}
    if any(curves.values()):
        out += ["## Foundation: per-language dev CER over training (step of each language's "
                "best)", "", "| language | best dev CER % | at step | last |",
                "|---|---:|---:|---:|"]
        for lang, points in curves.items():
            if not points:
                continue
            step, best = min(points, key=lambda sv: (sv[1], sv[0]))
            out.append(f"| {lang} | {100 * best:.1f} | {step} | {100 * points[-1][1]:.1f} |")
        out.append("")
    out += [f"Command: `{args.command}` (from `egs/mini_cv_lang/lda`).", ""]

    body = "\n".join(out)
    from speechfm.train import splice_tables

    splice_tables(args.out, body, "# LDA: language-dependent adapters for tail languages")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
