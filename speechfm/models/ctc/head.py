"""Output-layer re-mapping for crosslingual fine-tuning (Whistle's phoneme fine-tuning).

A CTC model pretrained over one token inventory (the ten seen languages' IPA phones) is
fine-tuned on a language whose inventory overlaps it only partly. The encoder is copied as
usual (``init_from``); the output layer is re-mapped by token *name*: each row (weight and
bias) of a token the two vocabularies share is copied from the pretrained head, so a
phone the model already knows starts with the classifier it learned; the rows of tokens
new to the model keep the fresh initialisation of the new head. Blank, ``<unk>`` and the
word-boundary token are tokens like the others (shared by every speechfm tokenizer of a
kind, so they are copied).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from speechfm.errors import DataError

__all__ = ["HeadRemap", "remap_head_rows", "init_head_from"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadRemap:
    """What :func:`remap_head_rows` did."""

    shared: tuple[str, ...]
    """Tokens whose rows were copied from the source head."""
    new: tuple[str, ...]
    """Tokens of the target vocabulary the source lacks (rows left as initialised)."""
    dropped: tuple[str, ...]
    """Source tokens the target vocabulary lacks (their rows are not used)."""

    def summary(self) -> dict:
        return {"shared": len(self.shared), "new": list(self.new), "dropped": len(self.dropped)}


def remap_head_rows(head: nn.Linear, new_tokens: Sequence[str], src_weight: torch.Tensor,
                    src_bias: torch.Tensor | None, src_tokens: Sequence[str]) -> HeadRemap:
    """Copy the rows of ``src_weight``/``src_bias`` (indexed by ``src_tokens``) into ``head``
    (indexed by ``new_tokens``) for every token both lists hold; in place.

    Raises:
        ValueError: the shapes do not match the token lists, or no token is shared.
    """
    if head.weight.shape[0] != len(new_tokens):
        raise ValueError(f"head has {head.weight.shape[0]} rows for {len(new_tokens)} tokens")
    if src_weight.dim() != 2 or src_weight.shape[0] != len(src_tokens):
        raise ValueError(f"source head has shape {tuple(src_weight.shape)} for "
                         f"{len(src_tokens)} tokens")
    if src_weight.shape[1] != head.weight.shape[1]:
        raise ValueError(f"source head width {src_weight.shape[1]} != the model's "
                         f"{head.weight.shape[1]} (different encoder width)")
    src_index = {tok: i for i, tok in enumerate(src_tokens)}
    pairs = [(i, src_index[tok]) for i, tok in enumerate(new_tokens) if tok in src_index]
    if not pairs:
        raise ValueError("no token is shared between the source and the new vocabulary")
    dst = torch.tensor([i for i, _ in pairs])
    src = torch.tensor([j for _, j in pairs])
    with torch.no_grad():
        head.weight[dst] = src_weight[src].to(head.weight.dtype)
        if head.bias is not None and src_bias is not None:
            head.bias[dst] = src_bias[src].to(head.bias.dtype)
    new_set = set(new_tokens)
    return HeadRemap(
        shared=tuple(new_tokens[i] for i, _ in pairs),
        new=tuple(tok for tok in new_tokens if tok not in src_index),
        dropped=tuple(tok for tok in src_tokens if tok not in new_set),
    )


def init_head_from(model: nn.Module, source: str | os.PathLike, tokens: Sequence[str]) -> HeadRemap:
    """Re-map ``model.head`` from the CTC model directory (or checkpoint) ``source``: the
    rows of the tokens ``source``'s tokenizer shares with ``tokens`` are copied.

    Raises:
        DataError: ``source`` has no tokenizer or no ``head.weight``.
    """
    from speechfm.models.io import load_part, read_weights

    src_tok = load_part(source, "tokenizer")
    if src_tok is None:
        raise DataError(f"{source}: no tokenizer to re-map the output layer by")
    weights = read_weights(source)
    if "head.weight" not in weights:
        raise DataError(f"{source}: no head.weight (not a CTC model?)")
    remap = remap_head_rows(model.head, list(tokens), weights["head.weight"],
                            weights.get("head.bias"), src_tok.tokens)
    log.info("output layer re-mapped from %s: %d tokens copied, %d new %s", source,
             len(remap.shared), len(remap.new), list(remap.new)[:20])
    return remap
