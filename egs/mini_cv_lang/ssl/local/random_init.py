#!/usr/bin/env python3
"""A model directory with the architecture of another and fresh (random) weights.

    python local/random_init.py --like EXP/w2v_bert/final --out EXP/random_init [--seed 0]

The ssl recipe's "scratch" fine-tunes and "random" probes start from this directory with
``init_from=EXP/random_init encoder_from_init=true``, exactly as the pretrained ones start
from EXP/w2v_bert/final: the same architecture (read from the pretrained model's
config.json, so any ``--ssl-args`` model override or ``--init-from`` checkpoint carries
over) and the same code path, differing only in the encoder's weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from speechfm.models.io import build_model, read_model_config, save_model_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--like", required=True, type=Path, help="model directory to copy the config of")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    meta = read_model_config(args.like)
    torch.manual_seed(args.seed)
    module, config = build_model(meta, where=args.like / "config.json")
    save_model_dir(args.out, module, config, extra={"random_init": {"like": str(args.like),
                                                                    "seed": args.seed}})
    n = sum(p.numel() for p in module.parameters())
    print(f"wrote {args.out}: {meta['family']} model, {n / 1e6:.2f} M parameters, random "
          f"weights (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
