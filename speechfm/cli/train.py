"""``speechfm train``: train a CTC or transducer ASR model from a YAML config.

    speechfm train CONFIG.yaml [--exp-dir DIR] [--resume] [key=value ...]
    torchrun --nproc-per-node 2 -m speechfm train CONFIG.yaml ...     (data parallel)

``key=value`` overrides reach nested fields by dotted paths (``optimizer.lr=2e-3``,
``model.encoder.num_layers=8``, ``max_steps=100``); values are read as YAML. See
:class:`speechfm.asr.train.AsrTrainConfig` for every field. The exported model lands in
``EXP/final`` (config.json, model.safetensors, tokenizer/).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a CTC or transducer ASR model (YAML config + key=value overrides)",
        description="Train a CTC or transducer (model_size transducer_*) ASR model. Overrides are dotted key=value pairs, e.g. "
        "optimizer.lr=2e-3 model.encoder.dim=144 max_steps=2000.",
    )
    p.add_argument("config", help="YAML training config (fields of AsrTrainConfig)")
    # REMAINDER, because argparse cannot put positionals after options otherwise
    # ("CONFIG --exp-dir X k=v"); the options found in it are parsed again in _train.
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="config overrides")
    p.add_argument("--exp-dir", default=None, help="output directory (overrides exp_dir)")
    p.add_argument(
        "--resume", action="store_true",
        help="continue from the latest checkpoint under EXP/checkpoints (fresh start if none)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    p.set_defaults(func=_train)


def _split_options(args: argparse.Namespace) -> None:
    """Move options that came after the first override into ``args``."""
    late = argparse.ArgumentParser(prog="speechfm train", add_help=False)
    late.add_argument("--exp-dir", default=None)
    late.add_argument("--resume", action="store_true")
    late.add_argument("--print-config", action="store_true")
    found, rest = late.parse_known_args(args.overrides)
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        print(f"speechfm train: error: not a key=value override: {' '.join(bad)}", file=sys.stderr)
        raise SystemExit(2)
    args.overrides = rest
    args.exp_dir = found.exp_dir or args.exp_dir
    args.resume = args.resume or found.resume
    args.print_config = args.print_config or found.print_config


def _train(args: argparse.Namespace) -> int:
    import yaml

    from speechfm.asr.train import load_train_config, train_asr
    from speechfm.errors import DataError

    _split_options(args)
    try:
        config = load_train_config(args.config, args.overrides, exp_dir=args.exp_dir)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        print(f"speechfm train: error: {args.config}: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    final = train_asr(config, resume=args.resume)
    print(f"model: {final}")
    return 0
