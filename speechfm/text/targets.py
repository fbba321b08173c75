"""Training targets of ASR recipes: which transcript a model learns, as token ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from speechfm.errors import DataError

__all__ = ["batch_targets", "resolve_targets"]


def resolve_targets(targets: str, tokenizer) -> str:
    """``"text"`` or ``"ipa"``: ``"auto"`` follows the tokenizer's kind.

    Raises:
        ValueError: a mismatch between an explicit choice and the tokenizer.
    """
    if targets == "auto":
        return "ipa" if tokenizer.kind == "ipa" else "text"
    if targets not in ("text", "ipa"):
        raise ValueError(f"targets must be auto, text or ipa, got {targets!r}")
    if (targets == "ipa") != (tokenizer.kind == "ipa"):
        raise ValueError(f"targets {targets!r} do not match a {tokenizer.kind} tokenizer")
    return targets


def batch_targets(batch: Mapping[str, Any], tokenizer, targets: str) -> list[list[int]]:
    """Token ids of every cut of a batch (``texts`` or ``ipa`` transcripts).

    Raises:
        DataError: a cut without the transcript to learn; the message names it.
    """
    texts = batch.get("ipa") if targets == "ipa" else batch["texts"]
    if texts is None:
        texts = [None] * len(batch["cut_ids"])
    out = []
    for cut_id, text in zip(batch["cut_ids"], texts, strict=True):
        if text is None:
            raise DataError(f"cut {cut_id}: no {targets} transcript to train on")
        out.append(tokenizer.encode(text))
    return out
