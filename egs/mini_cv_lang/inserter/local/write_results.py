#!/usr/bin/env python3
"""Write the InSerter RESULTS.md tables from the run's outputs.

    python local/write_results.py --exp exp --data data --modes asr,interleave,both \\
        --encoder ../asr/exp/ctc/final --asr ../asr/exp/ctc/final --out RESULTS.md \\
        --command "./run.sh"

Reads EXP/eval/<system>/results.json (stage 5: ``evaluate.py``), each run's
train_summary.json (EXP/text, EXP/speech_<mode>, EXP/<mode>_instruct), DATA/interleaved/
index.json and DATA/bench/bench.jsonl. Rewrites only what lies between the
``<!-- tables: begin -->`` and ``<!-- tables: end -->`` markers; prose around them stays.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

MODE_NAMES = {"asr": "ASR alignment", "interleave": "InSerter (interleaved)",
              "both": "ASR + interleaved"}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(tally: dict | None) -> str:
    """A score tally's accuracy in percent ("–" when absent or over no items)."""
    if not tally or tally.get("accuracy") is None:
        return "–"
    return f"{100 * tally['accuracy']:.1f}"


def _gap(a: dict | None, b: dict | None) -> str:
    """a − b in percentage points."""
    if not a or not b or a.get("accuracy") is None or b.get("accuracy") is None:
        return "–"
    return f"{100 * (a['accuracy'] - b['accuracy']):+.1f}"


def systems(exp: Path, modes: list[str]) -> list[tuple[str, str]]:
    """(name, label) of every evaluated system, in table order."""
    out = [("text", "text LM (text stage only: the reference; its adaptor never trained)")]
    for mode in modes:
        out += [(f"speech_{mode}", f"{MODE_NAMES.get(mode, mode)}, before instruct"),
                (f"{mode}_instruct", f"{MODE_NAMES.get(mode, mode)} + instruct")]
    return [(n, label) for n, label in out if (exp / "eval" / n / "results.json").is_file()]


def runs(exp: Path, modes: list[str]) -> list[tuple[str, dict]]:
    """(exp dir name, train_summary) of every run, in stage order."""
    names = ["text"] + [f"speech_{m}" for m in modes] + [f"{m}_instruct" for m in modes]
    return [(n, s) for n in names if (s := _json(exp / n / "train_summary.json"))]


def data_tables(data: Path, results: dict[str, dict]) -> list[str]:
    out: list[str] = []
    index = _json(data / "interleaved" / "index.json")
    if index:
        cfg = index.get("config", {})
        seg = index["segments"]
        out += ["## Data", "",
                "| interleaved corpus (English; text only, never instruction data) | |",
                "|---|---|",
                f"| documents | {index['documents']} |",
                f"| sequences | {index['sequences']} |",
                f"| sentences (spoken) | {index['sentences']} ({index['spoken_sentences']}, "
                f"{100 * index['spoken_fraction']:.1f} %) |",
                f"| words (spoken) | {index['words']} ({index['spoken_words']}) |",
                f"| segments: text / speech | {seg['text']} / {seg['speech']} |",
                f"| speech | {index['speech_hours']:.2f} h, voice pool `{cfg.get('voice_pool')}`"
                f", noise on {100 * cfg.get('noise_prob', 0):.0f} % of the segments at "
                f"{cfg.get('snr_range')} dB SNR |",
                f"| seed | {cfg.get('seed')} |", ""]
    bench = data / "bench" / "bench.jsonl"
    if bench.is_file():
        items = [json.loads(x) for x in bench.read_text(encoding="utf-8").splitlines() if x]
        fams = Counter(i["family"] for i in items)
        held = sorted({i["family"] for i in items if i["unseen_family"]})
        evaluated = sorted({r["num_items"] for r in results.values()})
        out += [f"Benchmark: {len(items)} instructions, {len(fams)} rule families "
                f"({', '.join(f'{n} x {k}' for k, n in sorted(Counter(fams.values()).items()))}"
                f" items), held-out family (never in any training data): "
                f"{', '.join(held) or 'none'}; wordings from test templates only; spoken by "
                "the `test` voice pool (voices no training data uses), clean and with "
                f"additive noise. Items evaluated per system: "
                f"{', '.join(map(str, evaluated)) or '–'}.", ""]
    return out


def accuracy_tables(exp: Path, names: list[tuple[str, str]], results: dict[str, dict],
                    asr: str | None) -> list[str]:
    conds = (("text", "text"), ("speech_clean", "speech clean"), ("speech_noisy", "speech noisy"))
    head = " | ".join(f"{c} {g}" for g in ("seen", "held-out") for _, c in conds)
    out = ["## Accuracy (%) by input: seen families, and the held-out family", "",
           "Rule-checked answers (greedy). Speech input is the instruction spoken; the "
           "cascade transcribes it with the ASR model and the text LM answers the transcript.",
           "", f"| system | {head} |", "|---|" + "---:|" * 6]
    for name, label in names:
        r = results[name]
        cells = [_pct((r.get(c) or {}).get(g)) for g in ("seen", "unseen") for c, _ in conds]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    text = results.get("text", {})
    if text.get("cascade_clean"):
        cells = []
        for g in ("seen", "unseen"):
            cells += ["–", _pct(text["cascade_clean"][g]),
                      _pct((text.get("cascade_noisy") or {}).get(g))]
        out.append(f"| cascade: ASR (`{asr}`) -> text LM | " + " | ".join(cells) + " |")
    out += ["", "## Speech–text gap (percentage points: speech − text input, same system)", "",
            "| system | clean, seen | noisy, seen | clean, held-out | noisy, held-out |",
            "|---|---:|---:|---:|---:|"]
    for name, label in names:
        r = results[name]
        cells = [_gap((r.get(c) or {}).get(g), (r.get("text") or {}).get(g))
                 for g in ("seen", "unseen") for c in ("speech_clean", "speech_noisy")]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if text.get("cascade_clean"):
        cells = [_gap((text.get(c) or {}).get(g), (text.get("text") or {}).get(g))
                 for g in ("seen", "unseen") for c in ("cascade_clean", "cascade_noisy")]
        out.append("| cascade: ASR -> text LM | " + " | ".join(cells) + " |")
    out.append("")

    speech = [(n, label) for n, label in names if n != "text"
              and (results[n].get("speech_clean") or {}).get("all")]
    if speech:
        def key(item):
            acc = results[item[0]]["speech_clean"]["all"]["accuracy"]
            return -1.0 if acc is None else acc

        best, label = max(speech, key=key)
        r = results[best]
        fams = {f: t["unseen_family"] for f, t in r["text"]["families"].items()}
        cascade = [c for c in ("cascade_clean", "cascade_noisy") if text.get(c)]
        out += [f"## Per family: the best speech system ({label}, by speech-clean accuracy "
                "over all items)", "",
                "| family | items | text | speech clean | speech noisy"
                + "".join(f" | {c.replace('_', ' ')} (text LM)" for c in cascade) + " |",
                "|---|---:|---:|---:|---:|" + "---:|" * len(cascade)]
        for fam in sorted(fams, key=lambda f: (fams[f], f)):
            cells = [str(r["text"]["families"][fam]["total"])]
            cells += [_pct((r.get(c) or {}).get("families", {}).get(fam))
                      for c in ("text", "speech_clean", "speech_noisy")]
            cells += [_pct(text[c]["families"].get(fam)) for c in cascade]
            out.append(f"| {fam}{' (held out)' if fams[fam] else ''} | "
                       + " | ".join(cells) + " |")
        out.append("")

    if text.get("cascade_clean"):
        out += ["## The cascade's ASR", "",
                f"`{asr}` transcribing the benchmark instructions (word error rate, %), and the "
                "text LM's accuracy on its transcripts (all items).", "",
                "| audio | WER % | cascade accuracy % | text LM on the written instruction % |",
                "|---|---:|---:|---:|"]
        for v in ("clean", "noisy"):
            c = text.get(f"cascade_{v}")
            if c:
                out.append(f"| {v} | {c['asr_wer']:.1f} | {_pct(c['all'])} | "
                           f"{_pct(text['text']['all'])} |")
        out.append("")
    return out


def run_tables(exp: Path, modes: list[str], encoder: str | None) -> list[str]:
    rs = runs(exp, modes)
    if not rs:
        return []
    first = rs[0][1]
    params = first.get("parameters", {})
    tok = first.get("lm_tokenizer", {})
    out = ["## Model, tokenizer and the CPU budget of each stage", "",
           f"Model: {first.get('model_size') or '–'}"
           + (f" with the plugged-in LM `{first['lm_from']}`" if first.get("lm_from") else "")
           + f"; LM tokenizer {tok.get('vocab_size')} tokens (byte-level BPE"
           + (f", `{tok['path']}`" if tok.get("path") else "") + "); parameters: encoder "
           f"{params.get('encoder', 0):,} (frozen, from `{first.get('encoder_from')}`), "
           f"adaptor + speech markers {params.get('adaptor', 0):,}, LM "
           f"{params.get('lm', 0):,}. Hardware: {first.get('hardware', '–')}.", "",
           "| run | stage | from | trainable params | training examples (by kind) | LM "
           "positions | budget (steps / min) | steps (stop) | train min | dev loss / token "
           "acc. |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    total = 0.0
    for name, s in rs:
        cfg = s.get("config", {})
        train = (s.get("data") or {}).get("train", {})
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(train.get("by_kind", {}).items()))
        dev = s.get("final_valid_last_weights") or {}
        stage = s.get("stage", "?") + (f" ({s['mode']})" if s.get("mode") else "")
        src = Path(s["init_from"]).parent.name if s.get("init_from") else "fresh"
        minutes = s.get("train_seconds", 0.0) / 60
        total += minutes
        dev_cell = (f"{dev['loss']:.3f} / {100 * dev['accuracy']:.1f} %"
                    if "loss" in dev and "accuracy" in dev else "–")
        out.append(f"| {name} | {stage} | {src} | {s.get('num_trainable_params', 0):,} | "
                   f"{train.get('sequences', '–')} ({kinds}) | {train.get('positions', '–'):,} | "
                   f"{cfg.get('max_steps')} / {cfg.get('max_minutes')} | {s.get('steps')} "
                   f"({s.get('stop_reason')}) | {minutes:.1f} | {dev_cell} |")
    out += ["", f"Training time, all runs: {total:.1f} min.", ""]
    enc = _json(Path(encoder).parent / "train_summary.json") if encoder else None
    if enc:
        out += [f"The speech encoder (and the cascade's ASR): `{encoder}`, a {enc.get('family')} "
                f"model ({enc.get('model_size') or '–'}, {enc.get('num_params', 0):,} "
                f"parameters) trained {enc.get('steps')} steps in "
                f"{enc.get('train_seconds', 0) / 60:.1f} min on {enc.get('hardware', '–')}"
                f" (`{enc.get('command', '')}`).", ""]
    return out


def commands(exp: Path, data: Path, modes: list[str], names: list[tuple[str, str]],
             results: dict[str, dict], command: str) -> list[str]:
    """The run.sh commands behind the runs, and the training / evaluation commands they ran
    (from ``egs/mini_cv_lang/inserter``)."""
    rs = runs(exp, modes)
    behind = list(dict.fromkeys(
        t.read_text(encoding="utf-8").strip() for n, _ in rs
        if (t := exp / n / "run_command.txt").is_file()))
    out = ["## Commands", "", "From `egs/mini_cv_lang/inserter`: the runs were made by "
           + ", ".join(f"`{c}`" for c in behind or ["–"]) + f"; these tables by `{command}`. "
           "The commands they ran:", "", "```"]
    for _, s in rs:
        if s.get("command", "").startswith("train.py"):
            out.append("python ../../../recipes/inserter/" + s["command"])
    for name, _ in names:
        r = results[name]
        done = exp / "eval" / name / ".done"
        limit = re.search(r"limit=(\d+)", done.read_text()) if done.is_file() else None
        out.append(f"python ../../../recipes/inserter/evaluate.py {r['model']} --bench "
                   f"{data}/bench --encoder-cache {data}/bench/encoder_cache --out "
                   f"{exp}/eval/{name} --max-new-tokens {r['max_new_tokens']} --batch-size "
                   f"{r['batch_size']}" + (f" --asr {r['asr']}" if r.get("asr") else "")
                   + (f" --limit-per-family {limit.group(1)}" if limit else ""))
    out += ["```", ""]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="exp", type=Path)
    p.add_argument("--data", default="data", type=Path)
    p.add_argument("--modes", default="asr,interleave,both")
    p.add_argument("--encoder", default=None)
    p.add_argument("--asr", default=None)
    p.add_argument("--out", default="RESULTS.md", type=Path)
    p.add_argument("--command", default="./run.sh")
    args = p.parse_args()
    exp, modes = args.exp, [m for m in args.modes.split(",") if m]
    names = systems(exp, modes)
    results = {n: _json(exp / "eval" / n / "results.json") for n, _ in names}
    out = data_tables(args.data, results)
    out += accuracy_tables(exp, names, results, args.asr)
    out += run_tables(exp, modes, args.encoder)
    out += commands(exp, args.data, modes, names, results, args.command)

    body = "\n".join(out)
    from speechfm.train import splice_tables

    splice_tables(args.out, body, "# InSerter on mini_cv_lang (English): spoken instructions "
                  "followed by transfer from text")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
