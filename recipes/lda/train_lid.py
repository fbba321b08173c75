#!/usr/bin/env python3
"""Train the small language-ID head that picks a merged LDA model's adapter when no language
is given.

    python recipes/lda/train_lid.py --model exp/foundation/final \\
        --train-cuts data/fbank/cuts_train.jsonl.gz data/fbank/cuts_pool.jsonl.gz \\
        --dev-cuts data/fbank/cuts_dev.jsonl.gz --out exp/lid/language_id.safetensors

The foundation stays frozen: each training cut's base-model encoder output (the final,
cascaded pass) is pooled once into mean and standard-deviation statistics, and a two-layer
MLP learns the language from them, drawing languages uniformly so that a tail language with
a few dozen utterances weighs as much as a head language. Its language labels need no
transcripts (the unlabelled tail pool counts). The head with the best dev accuracy is kept;
``<out>.json`` reports its per-language dev accuracy. ``recipes/lda/merge.py --language-id``
puts it into the merged model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def _pooled(model, cut_files: list[str], *, langs: set[str] | None, max_per_lang: int | None,
            seed: int, max_duration: float, desc: str):
    from lhotse import CutSet
    from tqdm import tqdm

    from speechfm.data.dataset import iterate_batches
    from speechfm.models.language_id import pooled_by_language

    cuts = [c for f in cut_files for c in CutSet.from_file(f)]
    by_lang: dict[str, list] = {}
    for c in cuts:
        lang = c.supervisions[0].language if c.supervisions else None
        if lang is not None and (langs is None or lang in langs):
            by_lang.setdefault(lang, []).append(c)
    rng = random.Random(seed)
    chosen = []
    for lang in sorted(by_lang):
        group = sorted(by_lang[lang], key=lambda c: c.id)
        if max_per_lang is not None and len(group) > max_per_lang:
            group = rng.sample(group, max_per_lang)
        chosen.extend(group)
    cutset = CutSet.from_cuts(chosen)
    batches = iterate_batches(cutset, model.encoder.fbank.config, max_duration=max_duration)
    return pooled_by_language(model, tqdm(batches, desc=desc, unit="batch"))


def train(model_dir: str, train_cuts: list[str], dev_cuts: list[str], out: str | Path, *,
          langs: list[str] | None = None, max_per_lang: int | None = 400, hidden: int = 128,
          steps: int = 2000, lr: float = 1e-3, seed: int = 0, max_duration: float = 120.0
          ) -> dict:
    """Train and save the head; returns the report written beside it (``<out>.json``)."""
    import torch

    from speechfm.models.adapter_store import base_model_hash
    from speechfm.models.io import load_model_dir
    from speechfm.models.language_id import (
        language_id_accuracy,
        save_language_id,
        train_language_id,
    )

    torch.manual_seed(seed)
    loaded = load_model_dir(model_dir)
    model = loaded.module.eval()
    keep = set(langs) if langs else None
    train_stats = _pooled(model, train_cuts, langs=keep, max_per_lang=max_per_lang, seed=seed,
                          max_duration=max_duration, desc="train statistics")
    dev_stats = _pooled(model, dev_cuts, langs=set(train_stats), max_per_lang=None, seed=seed,
                        max_duration=max_duration, desc="dev statistics")
    head, info = train_language_id(train_stats, hidden=hidden, steps=steps, lr=lr, seed=seed,
                                   dev=dev_stats, log=print)
    report = {"model": str(model_dir), "languages": head.languages,
              "train_utts": {k: len(v) for k, v in sorted(train_stats.items())},
              "best_step": int(info["step"]), "dev": language_id_accuracy(head, dev_stats)}
    out = Path(out)
    save_language_id(head, out, base_hash=base_model_hash(model),
                     extra={"dev_accuracy": report["dev"]["accuracy"], "step": report["best_step"]})
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the foundation model directory")
    p.add_argument("--train-cuts", nargs="+", required=True, help="cut manifests with languages")
    p.add_argument("--dev-cuts", nargs="+", required=True, help="held-out cut manifests")
    p.add_argument("--out", required=True, help="the head's .safetensors file")
    p.add_argument("--langs", help="comma-separated languages (default: all in the train cuts)")
    p.add_argument("--max-per-lang", type=int, default=400, help="training cuts per language")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    report = train(args.model, args.train_cuts, args.dev_cuts, args.out,
                   langs=args.langs.split(",") if args.langs else None,
                   max_per_lang=args.max_per_lang, hidden=args.hidden, steps=args.steps,
                   lr=args.lr, seed=args.seed)
    dev = report["dev"]
    print(f"language ID: dev accuracy {dev['accuracy']:.3f} at step {report['best_step']} ("
          + ", ".join(f"{lang} {dev[f'acc_{lang}']:.2f}" for lang in report["languages"]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
