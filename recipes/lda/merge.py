#!/usr/bin/env python3
"""Merge language-dependent adapters into one deployable model directory.

    python recipes/lda/merge.py --foundation DIR --adapters ky.safetensors tt.safetensors \\
        --out DIR

The output is the foundation's directory (its base weights, config, tokenizer) plus an
``adapters/`` part holding every given adapter file (each language's best checkpoint, as
``recipes/lda/train.py`` wrote it).  ``speechfm.load(OUT)`` attaches them all; the
language id picks one at inference (``.transcribe(audio, lang="ky")``, ``.stream(lang=
"ky")``).  Every adapter must have been made for this foundation (its base-weights hash is
checked) and the languages must be distinct.

``--language-id FILE`` adds a language-ID head (``recipes/lda/train_lid.py``, trained on
this foundation) as the ``language_id`` part: the merged model then picks the adapter itself
when no language is given (``.transcribe(audio)``, ``speechfm decode --language auto``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def merge(foundation: str | Path, adapters: list[str | Path], out: str | Path,
          language_id: str | Path | None = None) -> Path:
    """Write the merged model directory; returns it.

    Raises:
        DataError: an adapter or a language-ID head for another base model, two adapters
            for one language, or a foundation that already carries adapters.
    """
    from speechfm.errors import DataError
    from speechfm.models.adapter_store import attach_adapter, base_model_hash, read_adapter
    from speechfm.models.io import load_model_dir, load_part, save_model_dir

    loaded = load_model_dir(foundation)
    if load_part(foundation, "adapters", loaded.meta):
        raise DataError(f"{foundation}: already a merged model (it has an adapters/ part)")
    base = base_model_hash(loaded.module)
    files = {}
    for path in adapters:
        adapter = read_adapter(path)
        stem = adapter.language or adapter.name
        if stem in files:
            raise DataError(f"{path}: a second adapter for {stem!r}")
        attach_adapter(loaded.module, adapter, base_hash=base)  # checks base and shapes
        files[stem] = adapter
    parts: dict = {"adapters": files}
    if language_id is not None:
        from speechfm.models.language_id import check_base, load_language_id

        head, meta = load_language_id(language_id)
        check_base(meta, base, language_id)
        parts["language_id"] = (head, meta)
    if loaded.tokenizer is not None:
        parts["tokenizer"] = loaded.tokenizer
    from speechfm.nn.adapters import base_state_dict

    return save_model_dir(out, base_state_dict(loaded.module), loaded.config, parts=parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--foundation", required=True, help="the base model directory")
    p.add_argument("--adapters", nargs="*", default=[], help="adapter files (none: the foundation alone)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--language-id", help="a language-ID head file (train_lid.py) to include")
    args = p.parse_args(argv)
    out = merge(args.foundation, args.adapters, args.out, args.language_id)
    print(f"merged model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
