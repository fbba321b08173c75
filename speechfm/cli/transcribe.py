"""``speechfm transcribe``: transcribe audio files with a trained model directory.

    speechfm transcribe MODEL FILE [FILE ...] [--method greedy|beam] [--beam 4]
                        [--timestamps] [--json] [--batch-size 8] [--device cpu] [--dtype D]

Prints one line per file, in the order given: ``FILE<TAB>text``, or with ``--json`` (or
``--timestamps``, which needs the structure) one JSON object per line::

    {"file": "a.wav", "text": "hello world",
     "words": [{"word": "hello", "start": 0.32, "end": 0.68, "confidence": 0.97}, ...],
     "tokens": [...], "token_confidences": [...], "token_times": [[0.32, 0.36], ...]}

A file that cannot be read is reported on stderr (naming it and the problem) and skipped;
the others are still transcribed and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Files read into memory at a time: bounds memory on long file lists while still giving
# the length-sorted batching plenty to choose from.
_GROUP = 256


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files with a trained model",
        description="Transcribe audio files (wav/flac/ogg/mp3, any rate) with a model "
        "directory (config.json, model.safetensors, tokenizer/). Prints 'FILE<TAB>text' "
        "lines, or JSON lines with --json/--timestamps.",
    )
    p.add_argument("model", type=Path, help="model directory (or a checkpoint root with 'latest')")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--method", choices=("greedy", "beam"), default="greedy", help="search")
    p.add_argument("--beam", type=_positive_int, default=4, help="beam width for --method beam")
    p.add_argument(
        "--timestamps",
        action="store_true",
        help="word and token times and confidences (implies --json)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per file, with words and times"
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="files per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, help="cast weights: float32, bfloat16, float16")
    p.set_defaults(func=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    import speechfm
    from speechfm.data.audio import read_audio
    from speechfm.errors import AudioError

    model = speechfm.load(args.model, device=args.device, dtype=args.dtype)
    as_json = args.json or args.timestamps
    rc = 0
    for start in range(0, len(args.files), _GROUP):
        names, waves = [], []
        for name in args.files[start : start + _GROUP]:
            try:
                waves.append(read_audio(name, model.sample_rate))
            except AudioError as e:
                print(f"speechfm transcribe: error: {e}", file=sys.stderr)
                rc = 1
                continue
            names.append(name)
        if not waves:
            continue
        results = model.transcribe(
            waves,
            sample_rate=model.sample_rate,
            method=args.method,
            beam=args.beam,
            timestamps=as_json,
            batch_size=args.batch_size,
        )
        for name, result in zip(names, results, strict=True):
            if as_json:
                line = json.dumps({"file": name, **result.to_dict()}, ensure_ascii=False)
            else:
                line = f"{name}\t{result}"
            print(line, flush=True)
    return rc
