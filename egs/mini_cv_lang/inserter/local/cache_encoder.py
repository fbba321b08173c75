#!/usr/bin/env python3
"""Stage 1: the frozen speech encoder's outputs, computed once, for the interleaved corpus
(what the speech stage of every mode reads) and the benchmark's clean and noisy audio
(what ``evaluate.py --encoder-cache`` reads).

    python local/cache_encoder.py --encoder ../asr/exp/ctc/final --corpus data/interleaved \\
        --bench data/bench

Writes ``CORPUS/encoder_cache/<encoder fingerprint[:16]>/`` and
``BENCH/encoder_cache/{clean,noisy}/<fingerprint[:16]>/`` with the recipe's own cache
function (``recipes/inserter/data.py``'s ``build_encoder_cache``): the speech LMs of every
stage hold this encoder unchanged (frozen), so they find these folders by the same
fingerprint and skip the work. Resumable; a finished cache costs only the fingerprint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[4] / "recipes" / "inserter"


def recipe_data():
    """recipes/inserter/data.py as a module (under the key the recipe itself uses)."""
    key = "_inserter_data"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, RECIPE / "data.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", required=True, help="a speechfm model directory")
    p.add_argument("--corpus", required=True, type=Path, help="a data.py corpus build")
    p.add_argument("--bench", required=True, type=Path, help="a data.py benchmark folder")
    p.add_argument("--batch-seconds", type=float, default=60.0)
    args = p.parse_args()

    from speechfm.models.io import load_model_dir
    from speechfm.train.runner import load_cuts

    data = recipe_data()
    model = load_model_dir(args.encoder).module
    jobs = [("corpus", data.speech_cuts(data.read_build(args.corpus)),
             args.corpus / "encoder_cache")]
    jobs += [(f"benchmark {v}", list(load_cuts(args.bench / v / "cuts.jsonl.gz")),
              args.bench / "encoder_cache" / v) for v in ("clean", "noisy")]
    for name, cuts, root in jobs:
        out = data.build_encoder_cache(model, cuts, root, batch_seconds=args.batch_seconds)
        meta = json.loads((out / "cache.json").read_text(encoding="utf-8"))
        hours = sum(c.duration for c in cuts) / 3600
        print(f"{name}: {meta['num_items']} segments, {hours:.2f} h, width {meta['dim']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
