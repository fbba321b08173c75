"""``speechfm convert``: checkpoints of other toolkits <-> speechfm model directories.

    speechfm convert SRC DST [--to hf] [--force]

Without ``--to``, SRC is another toolkit's checkpoint directory and DST becomes a
speechfm model directory (``speechfm.load(DST)``). The source format is read from SRC's
config.json: a transformers ``save_pretrained`` directory is known by its
``"model_type"``, looked up in :data:`CONVERTERS`:

- ``wav2vec2-bert`` (``Wav2Vec2BertModel`` and its task models): an ``"encoder"`` model
  directory (the encoder alone);
- ``audio-spectrogram-transformer`` (``ASTModel`` / ``ASTForAudioClassification``): an
  ``"ast"`` model directory, the classifier and its ``id2label`` included
  (``speechfm.load(DST).classify(audio)``).

With ``--to FORMAT``, SRC is a speechfm model directory and DST is written in FORMAT:
the family's interop module (``speechfm.models.io.get_family(family).interop``) provides
the function :data:`EXPORTERS` names for FORMAT, e.g. ``convert_to_hf_dir(src, dst)``:
``--to hf`` writes a ``Wav2Vec2BertModel`` (the encoder of the Conformer families) or an
``ASTForAudioClassification`` / ``ASTModel`` with its ``preprocessor_config.json`` (the
``"ast"`` family).

New formats are added to these tables (or, for a new model family, as its ``interop``
module), never as new commands. DST must not exist unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechfm.errors import DataError, SpeechfmError

CONVERTERS: dict[str, str] = {
    "wav2vec2-bert": "speechfm.models.conformer.interop:convert_from_hf_dir",
    "audio-spectrogram-transformer": "speechfm.models.ast.interop:convert_hf_dir",
}
"""transformers ``model_type`` -> ``"module:function"`` converting such a ``save_pretrained``
directory into a speechfm model directory: ``function(src_dir, dst_dir) -> Path``."""

EXPORTERS: dict[str, str] = {
    "hf": "convert_to_hf_dir",
}
"""``--to`` format -> the function of a family's interop module that writes it:
``function(src_dir, dst_dir) -> Path``."""

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a transformers checkpoint (w2v-BERT, AST) to a speechfm model "
        "directory, or back (--to)",
        description="Convert another toolkit's checkpoint directory (a transformers "
        "save_pretrained directory; model types: " + ", ".join(sorted(CONVERTERS)) + ") "
        "into a speechfm model directory, or with --to a speechfm model directory into "
        "another format (--to hf: a Wav2Vec2BertModel for the Conformer families' "
        "encoder, an ASTForAudioClassification / ASTModel plus preprocessor_config.json "
        "for the ast family).",
    )
    p.add_argument("src", metavar="SRC", help="directory to convert")
    p.add_argument("dst", metavar="DST", help="directory to write (must not exist)")
    p.add_argument("--to", choices=sorted(EXPORTERS), default=None,
                   help="SRC is a speechfm model directory: write DST in this format")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _known() -> str:
    return (f"transformers model types {', '.join(sorted(CONVERTERS))} -> speechfm; "
            f"speechfm model directories -> {', '.join(sorted(EXPORTERS))} with --to")


def converter_for(src: Path, to: str | None) -> Callable[[Path, Path], Path]:
    """The function converting directory ``src`` (to format ``to``, or into speechfm).

    Raises:
        DataError: ``src`` is missing, of an unknown format, or not convertible that way.
    """
    from speechfm.models.io import CONFIG_FILE, get_family, read_json_object, read_model_config

    if not src.exists():
        raise DataError(f"{src}: does not exist")
    if not src.is_dir():
        raise DataError(f"{src}: not a directory (expected a checkpoint directory with "
                        f"{CONFIG_FILE})")
    if not (src / CONFIG_FILE).is_file():
        raise DataError(f"{src}: no {CONFIG_FILE}, so neither a speechfm model directory nor "
                        f"a transformers save_pretrained directory (this converts: {_known()})")
    raw = read_json_object(src / CONFIG_FILE)
    model_type = raw.get("model_type")
    if model_type is not None:  # transformers: speechfm's config.json never has one
        if to is not None:
            raise DataError(f"{src}: a transformers ({model_type}) checkpoint, not a speechfm "
                            f"model directory; --to {to} converts speechfm directories "
                            "(leave --to out to convert it into one)")
        if model_type not in CONVERTERS:
            raise DataError(f"{src}: no converter for transformers model_type {model_type!r} "
                            f"(this converts: {_known()})")
        return _resolve(CONVERTERS[model_type])
    if not {"format_version", "family", "model"} & set(raw):
        raise DataError(f"{src / CONFIG_FILE}: neither a speechfm model directory's (no "
                        '"family"/"format_version") nor a transformers one\'s (no "model_type"); '
                        f"this converts: {_known()}")
    meta = read_model_config(src)  # DataError: not a valid speechfm model directory
    family = meta["family"]
    if to is None:
        raise DataError(f"{src}: already a speechfm model directory ({family} family); "
                        f"pass --to ({', '.join(sorted(EXPORTERS))}) to convert it to "
                        "another format")
    interop = get_family(family).interop
    function = getattr(importlib.import_module(interop), EXPORTERS[to], None) if interop else None
    if function is None:
        raise DataError(f"{src}: the {family} family cannot be converted to {to} "
                        f"({interop} has no {EXPORTERS[to]})")
    return function


def _convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    function = converter_for(src, args.to)
    if dst.exists():
        if not args.force:
            raise DataError(f"{dst}: already exists (pass --force to replace it)")
        if dst.resolve() == src.resolve():
            raise DataError(f"{dst}: is SRC itself; write the conversion elsewhere")
    try:
        out = function(src, dst)
    except ImportError as e:  # an optional dependency (transformers) is not installed
        raise SpeechfmError(f"converting {src}: {e}") from e
    print(f"converted {src} -> {out}")
    return 0
