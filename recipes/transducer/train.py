#!/usr/bin/env python3
"""Transducer ASR recipe: a Conformer encoder, a stateless predictor and a joiner trained
with the pruned RNN-T loss (or the full loss), icefall style.

    python recipes/transducer/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--full-loss]
        [--print-config] [key=value ...]
    torchrun --nproc-per-node 2 recipes/transducer/train.py CONFIG.yaml ...   (data parallel)

CONFIG is a :class:`speechfm.asr.config.AsrTrainConfig` YAML whose ``model_size`` is a
transducer size (``transducer_tiny`` ... ``transducer_large``); ``configs/`` has the
recipe's defaults. The loss settings are ``transducer_loss`` (see
:class:`speechfm.losses.transducer.TransducerLossConfig`); their defaults are icefall's
pruned_transducer_stateless ones: prune range 5, lm_scale 0.25, am_scale 0, the simple
loss weighted 1.0 -> 0.5 while the pruned loss rises 0.1 -> 1.0 over ``warm_steps``.
``--full-loss`` trains with the full RNN-T loss over the whole (T, U+1) lattice instead
(memory O(N T U V): for small vocabularies or checking the pruned loss against it).

Checkpoints, resume, TensorBoard, curves.png and the exported ``EXP/final`` model directory
are speechfm's trainer's (:func:`speechfm.asr.train.train_asr`); decode the result with
``speechfm decode EXP/final --cuts ... [--method beam] [--streaming --chunk-size 16]`` or
``speechfm.load("EXP/final")`` (``.transcribe`` and ``.stream``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.asr.config import apply_overrides, load_train_config
    from speechfm.asr.train import train_asr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML training config (AsrTrainConfig fields)")
    p.add_argument("--exp-dir", default=None, help="output directory (overrides exp_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint (fresh start if none)")
    p.add_argument("--full-loss", action="store_true",
                   help="train with the full RNN-T loss instead of the pruned one")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o]
    if bad:
        p.error(f"not a key=value override: {' '.join(bad)}")
    if args.full_loss:
        overrides.append("transducer_loss.kind=full")
    # The size first: a CTC size would only fail later, on the transducer-only fields.
    try:
        raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        p.error(f"{args.config}: cannot read the config: {e}")
    size = apply_overrides(raw if isinstance(raw, dict) else {}, overrides).get("model_size")
    if not str(size).startswith("transducer_"):
        p.error(f"{args.config}: model_size {size!r} is not a transducer size "
                "(transducer_tiny, transducer_small, transducer_base, transducer_large)")
    try:
        config = load_train_config(args.config, overrides, exp_dir=args.exp_dir)
    except ValueError as e:
        p.error(f"{args.config}: {e}")
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    final = train_asr(config, resume=args.resume)
    print(f"model: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
