"""The single ``speechfm`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds an argparse parser whose ``func`` default runs the
command and returns an exit status. Modules import their heavy dependencies inside the
command functions so that ``speechfm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from speechfm.errors import SpeechfmError

# Order is the order in ``speechfm --help``.
_COMMAND_MODULES = ("prepare", "data", "features", "tokenizer", "lexicon", "lm", "train", "finetune",
                    "decode", "convert", "export", "transcribe", "classify")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechfm", description="speechfm: speech foundation-model training stack"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"speechfm.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except SpeechfmError as e:
        print(f"speechfm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # python -m speechfm.cli
    sys.exit(main())
