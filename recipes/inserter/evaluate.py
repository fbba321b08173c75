#!/usr/bin/env python3
"""The spoken-instruction evaluation of an InSerter model: answer the benchmark written,
spoken (clean and noisy) and through an ASR cascade; score every answer by its rule.

    python recipes/inserter/evaluate.py MODEL_DIR --bench data/bench --out exp/eval/NAME
        [--asr ASR_DIR] [--max-new-tokens 24] [--batch-size 16] [--encoder-cache DIR]
        [--limit-per-family N] [--prompt-before TEXT --prompt-after TEXT]

``--bench`` is a folder of ``data.py benchmark`` (``bench.jsonl``, ``clean/cuts.jsonl.gz``,
``noisy/cuts.jsonl.gz``; cut ids = item ids); ``--items`` / ``--clean-cuts`` /
``--noisy-cuts`` name the files one by one instead. Conditions:

- ``text``: the instruction as text (``respond_batch(texts=)``);
- ``speech_clean`` / ``speech_noisy``: the instruction as audio (``respond_batch(audio)``:
  the same prompt framing as training, the model's own fbank and encoder); with
  ``--encoder-cache`` the encoder outputs are computed once with the training cache
  function (``data.build_encoder_cache``) and fed as ``SpeechSegment(encoded=)``;
- ``cascade_clean`` / ``cascade_noisy`` (with ``--asr``): a speechfm ASR model
  transcribes the audio (``speechfm.load(ASR).transcribe``), the LM answers the
  transcript as text; the ASR word error rate is reported too.

Greedy decoding, at most ``--max-new-tokens``. The prompts are the ones the model was
trained with (its ``inserter.json``), unless given. Writes ``OUT/responses_<condition>.jsonl``
(``{"id", "family", "unseen_family", "input", "response", "correct"}``) and
``OUT/results.json`` (``{"text", "speech_clean", "speech_noisy", "cascade_clean",
"cascade_noisy"}``: each ``instruct.score``'s seen / unseen / all / per-family accuracy, or
null when its input was not given), and prints one table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

CONDITIONS = ("text", "speech_clean", "speech_noisy", "cascade_clean", "cascade_noisy")
"""The keys of results.json, in table order."""


def _sibling(name: str):
    key = f"_inserter_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def model_prompts(model_dir: str | Path) -> tuple[str, str]:
    """(prompt_before, prompt_after) the model was trained with: its ``inserter.json``, or
    the recipe's defaults for a directory without one."""
    from speechfm.models.speech_lm import read_framing

    framing = read_framing(model_dir)
    if framing:
        return framing["prompt_before"], framing["prompt_after"]
    fields = _sibling("train").InserterConfig.__dataclass_fields__
    return fields["prompt_before"].default, fields["prompt_after"].default


def first_per_family(items: Sequence[Any], n: int) -> list[Any]:
    """The first ``n`` items of each family, in the given order."""
    counts: dict[str, int] = {}
    kept = []
    for item in items:
        counts[item.family] = counts.get(item.family, 0) + 1
        if counts[item.family] <= n:
            kept.append(item)
    return kept


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _in_chunks(fn: Callable[[list[int]], list[str]], n: int, size: int, desc: str,
               progress: bool) -> list[str]:
    """``fn`` over index chunks with a progress bar; the outputs concatenated."""
    from tqdm.auto import tqdm

    out: list[str] = []
    with tqdm(total=n, desc=desc, unit="item", disable=not progress) as bar:
        for chunk in _chunks(n, size):
            out += fn(list(chunk))
            bar.update(len(chunk))
    return out


def _audio(cuts_path: str | Path, items: Sequence[Any]) -> list[tuple[Any, int]]:
    """The items' audio, ``(samples, sample_rate)`` in item order."""
    from speechfm.errors import DataError
    from speechfm.train.runner import load_cuts

    by_id = {c.id: c for c in load_cuts(cuts_path)}
    missing = [i.id for i in items if i.id not in by_id]
    if missing:
        raise DataError(f"{cuts_path}: no audio for {len(missing)} items, e.g. {missing[:5]}")
    return [(by_id[i.id].load_audio()[0], by_id[i.id].sampling_rate) for i in items]


def _cached_answers(model, items, cuts_path, root: Path, prompts: tuple[str, str], *,
                    max_new_tokens: int, batch_size: int, progress: bool, desc: str) -> list[str]:
    """Speech answers from cached encoder outputs (the training cache function)."""
    from speechfm.models.speech_lm import SpeechSegment, decode_response, prompt_segments
    from speechfm.train.runner import load_cuts

    data = _sibling("data")
    # The whole manifest, so that a run on a subset of the items reuses the cache.
    cache = data.EncoderCache(data.build_encoder_cache(model.module, load_cuts(cuts_path), root,
                                                       progress=progress))
    tok = model.lm_tokenizer

    def answer(idx: list[int]) -> list[str]:
        prefixes = [prompt_segments(tok, speech=SpeechSegment(encoded=cache.get(items[i].id)),
                                    prompt_before=prompts[0], prompt_after=prompts[1])
                    for i in idx]
        ids = model.module.generate(prefixes, max_new_tokens=max_new_tokens,
                                    eos_id=tok.eos_token_id)
        return [decode_response(tok, row) for row in ids]

    return _in_chunks(answer, len(items), batch_size, desc, progress)


def evaluate(model_dir: str | Path, items: Sequence[Any], out_dir: str | Path, *,
             clean_cuts: str | Path | None = None, noisy_cuts: str | Path | None = None,
             asr: str | Path | None = None, max_new_tokens: int = 24, batch_size: int = 16,
             prompts: tuple[str, str] | None = None, encoder_cache: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Answer and score every condition (module doc); returns the results.json content."""
    import speechfm
    from speechfm.decode.scoring import score as wer_score

    ins = _sibling("instruct")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = speechfm.load(model_dir)
    prompts = prompts or model_prompts(model_dir)
    asr_model = speechfm.load(asr) if asr else None
    frame = {"prompt_before": prompts[0], "prompt_after": prompts[1],
             "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    results: dict[str, Any] = {"model": str(model_dir), "asr": str(asr) if asr else None,
                               "num_items": len(items), **frame}

    def respond(inputs: Sequence[Any], desc: str, *, text: bool) -> list[str]:
        def fn(idx: list[int]) -> list[str]:
            batch = [inputs[i] for i in idx]
            kw = {"texts": batch} if text else {"audio": batch}
            return model.respond_batch(**kw, prompt_before=prompts[0], prompt_after=prompts[1],
                                       max_new_tokens=max_new_tokens, batch_size=batch_size)
        return _in_chunks(fn, len(inputs), batch_size * 4, desc, progress)

    def record(name: str, inputs: Sequence[str], responses: Sequence[str], **extra) -> None:
        with open(out / f"responses_{name}.jsonl", "w", encoding="utf-8") as f:
            for item, given, response in zip(items, inputs, responses, strict=True):
                f.write(json.dumps({"id": item.id, "family": item.family,
                                    "unseen_family": item.unseen_family, "input": given,
                                    "response": response,
                                    "correct": ins.check(item, response)},
                                   ensure_ascii=False) + "\n")
        results[name] = {**ins.score(items, list(responses)), **extra}

    instructions = [i.instruction for i in items]
    record("text", instructions, respond(instructions, "text", text=True))
    for variant, cuts in (("clean", clean_cuts), ("noisy", noisy_cuts)):
        results[f"speech_{variant}"] = results[f"cascade_{variant}"] = None
        if cuts is None:
            continue
        audio = _audio(cuts, items)
        names = [f"<audio {i.id}>" for i in items]
        if encoder_cache is not None:
            answers = _cached_answers(model, items, cuts, Path(encoder_cache) / variant, prompts,
                                      max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      progress=progress, desc=f"speech {variant} (cached)")
        else:
            answers = respond(audio, f"speech {variant}", text=False)
        record(f"speech_{variant}", names, answers)
        if asr_model is not None:
            def transcribe(idx: list[int], audio=audio) -> list[str]:
                return list(asr_model.transcribe([audio[i] for i in idx], batch_size=batch_size))

            heard = _in_chunks(transcribe, len(items), batch_size * 4, f"asr {variant}", progress)
            wer = wer_score({i.id: i.instruction for i in items},
                            {i.id: h for i, h in zip(items, heard, strict=True)})
            record(f"cascade_{variant}", heard, respond(heard, f"cascade {variant}", text=True),
                   asr_wer=round(wer.percent, 2))
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """One table: accuracy (%) per family (rows) and condition (columns), then the
    seen / unseen / all totals and the cascade's ASR WER."""
    conds = [c for c in CONDITIONS if results.get(c)]
    fams: dict[str, bool] = {}
    for c in conds:
        for name, t in results[c]["families"].items():
            fams[name] = t["unseen_family"]

    def cell(t: Mapping[str, Any] | None) -> str:
        return "-" if not t or t["accuracy"] is None else f"{100 * t['accuracy']:.1f}"

    width = max([22] + [len(n) + 9 for n in fams])
    lines = [f"{'family':<{width}}" + "".join(f"{c:>15}" for c in conds),
             "-" * (width + 15 * len(conds))]
    for name in sorted(fams, key=lambda n: (fams[n], n)):
        label = name + (" (unseen)" if fams[name] else "")
        lines.append(f"{label:<{width}}" + "".join(
            f"{cell(results[c]['families'].get(name)):>15}" for c in conds))
    lines.append("-" * (width + 15 * len(conds)))
    for group, label in (("seen", "seen families"), ("unseen", "unseen family"), ("all", "all")):
        lines.append(f"{label:<{width}}" + "".join(f"{cell(results[c][group]):>15}"
                                                   for c in conds))
    wers = [f"{c}: {results[c]['asr_wer']:.1f}" for c in conds if "asr_wer" in results[c]]
    if wers:
        lines.append("ASR WER (%) of the cascade: " + ", ".join(wers))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a speech_lm model directory (EXP/final)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bench", help="a data.py benchmark folder")
    p.add_argument("--items", help="benchmark JSONL (default BENCH/bench.jsonl)")
    p.add_argument("--clean-cuts", help="clean audio cuts (default BENCH/clean/cuts.jsonl.gz)")
    p.add_argument("--noisy-cuts", help="noisy audio cuts (default BENCH/noisy/cuts.jsonl.gz)")
    p.add_argument("--asr", help="a speechfm ASR model directory for the cascade")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--encoder-cache", help="cache the benchmark's encoder outputs here")
    p.add_argument("--limit-per-family", type=int, help="the first N items of each family")
    p.add_argument("--prompt-before", help="default: the model's inserter.json")
    p.add_argument("--prompt-after", help="default: the model's inserter.json")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    def pick(given: str | None, name: str) -> str | None:
        if given or not args.bench:
            return given
        path = Path(args.bench) / name
        return str(path) if path.is_file() else None

    items_path = pick(args.items, "bench.jsonl")
    if items_path is None:
        p.error("give --bench or --items")
    ins = _sibling("instruct")
    items = ins.read_jsonl(items_path)
    if args.limit_per_family is not None:
        items = first_per_family(items, args.limit_per_family)
    before, after = model_prompts(args.model)
    prompts = (args.prompt_before if args.prompt_before is not None else before,
               args.prompt_after if args.prompt_after is not None else after)
    results = evaluate(args.model, items, args.out,
                       clean_cuts=pick(args.clean_cuts, "clean/cuts.jsonl.gz"),
                       noisy_cuts=pick(args.noisy_cuts, "noisy/cuts.jsonl.gz"), asr=args.asr,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       prompts=prompts, encoder_cache=args.encoder_cache,
                       progress=not args.no_progress)
    print(format_results(results))
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
