"""``speechfm transcribe``: transcribe audio files with a trained model directory.

    speechfm transcribe MODEL FILE [FILE ...] [--method greedy|beam] [--beam 4]
                        [--timestamps] [--json] [--batch-size 8] [--device cpu] [--dtype D]
                        [--long-form-s 30] [--no-vad] [--no-progress]

Prints one line per file, in the order given: ``FILE<TAB>text``, or with ``--json`` (or
``--timestamps``, which needs the structure) one JSON object per line::

    {"file": "a.wav", "text": "hello world",
     "words": [{"word": "hello", "start": 0.32, "end": 0.68, "confidence": 0.97}, ...],
     "tokens": [...], "token_confidences": [...], "token_times": [[0.32, 0.36], ...]}

Files of any length work: one longer than ``--long-form-s`` seconds is cut at pauses into
pieces and stitched (word times stay times in the file), with a progress bar on stderr
(:mod:`speechfm.decode.longform`). A file in which the voice-activity detector finds no
speech prints an empty text (``--no-vad`` decodes it anyway). A file that cannot be read
(missing, a directory, undecodable) is reported on stderr (naming it and the problem) and
skipped; the others are still transcribed and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Files read into memory at a time: bounds memory on long file lists while still giving
# the length-sorted batching plenty to choose from. A group also ends after _GROUP_S
# seconds of audio, and a long file is transcribed on its own, so a list of hour-long
# recordings is held one at a time.
_GROUP = 256
_GROUP_S = 1800.0


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
    p.add_argument("--long-form-s", type=float, default=None, metavar="S",
                   help="files longer than S seconds are transcribed in pieces of at most S "
                   "seconds, cut at pauses (default 30)")
    p.add_argument("--no-vad", action="store_true",
                   help="decode files (and stretches of long files) without detected speech "
                   "too, instead of printing an empty text for them")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr for long files")
    p.set_defaults(func=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    import speechfm
    from speechfm.data.audio import read_audio
    from speechfm.decode.longform import DEFAULT_LONG_FORM_S
    from speechfm.errors import AudioError

    long_form_s = DEFAULT_LONG_FORM_S if args.long_form_s is None else args.long_form_s
    if long_form_s <= 0:
        print("speechfm transcribe: error: --long-form-s must be > 0", file=sys.stderr)
        return 2
    model = speechfm.load(args.model, device=args.device, dtype=args.dtype)
    as_json = args.json or args.timestamps
    rate = model.sample_rate

    def run(names: list[str], waves: list) -> None:
        results = model.transcribe(
            waves,
            sample_rate=rate,
            method=args.method,
            beam=args.beam,
            timestamps=as_json,
            batch_size=args.batch_size,
            vad=not args.no_vad,
            long_form_s=long_form_s,
            progress=not args.no_progress,
        )
        for name, result in zip(names, results, strict=True):
            if as_json:
                line = json.dumps({"file": name, **result.to_dict()}, ensure_ascii=False)
            else:
                line = f"{name}\t{result}"
            print(line, flush=True)

    rc = 0
    names: list[str] = []
    waves: list = []
    for name in args.files:
        try:
            if Path(name).is_dir():
                raise AudioError(f"{name}: is a directory, not an audio file (pass the files "
                                 "in it, e.g. DIR/*.wav)")
            wave = read_audio(name, rate, max_duration=None)
        except AudioError as e:
            print(f"speechfm transcribe: error: {e}", file=sys.stderr)
            rc = 1
            continue
        if wave.shape[0] > long_form_s * rate:
            # Output stays in input order: what was read before goes first.
            if names:
                run(names, waves)
                names, waves = [], []
            run([name], [wave])
            continue
        names.append(name)
        waves.append(wave)
        if len(names) >= _GROUP or sum(w.shape[0] for w in waves) > _GROUP_S * rate:
            run(names, waves)
            names, waves = [], []
    if names:
        run(names, waves)
    return rc
