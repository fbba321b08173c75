"""The speech LM's text tokenizer: plain transformers tokenizers (``PreTrainedTokenizerFast``
or whatever ``AutoTokenizer`` loads for a plugged-in LM).

:func:`train_lm_tokenizer` trains a byte-level BPE offline with the ``tokenizers`` library
(case, punctuation and any Unicode text survive encode/decode; nothing is unknown). A
model directory keeps the tokenizer as its ``lm_tokenizer/`` part (``save_pretrained``,
reloaded with ``AutoTokenizer`` from the local folder only).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BOS", "EOS", "PAD", "load_lm_tokenizer", "save_lm_tokenizer", "train_lm_tokenizer"]

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
"""Special tokens of :func:`train_lm_tokenizer`, with ids 0, 1 and 2."""


def train_lm_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None,
                       *, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer (GPT-2 style, no prefix space) on ``texts``.

    Args:
        texts: training text, one string per item (streamed once).
        vocab_size: the most tokens (256 byte symbols + 3 specials + merges); a small
            corpus may stop short of it: the size is ``len(tokenizer)``.
        out_dir: save it here with ``save_pretrained`` (None: do not save).
        min_frequency: pairs seen fewer times are not merged.

    Returns:
        A transformers fast tokenizer with ``<pad>`` = 0, ``<s>`` (bos) = 1 and ``</s>``
        (eos) = 2; ``encode(text, add_special_tokens=False)`` adds no specials.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260:
        raise ValueError(f"vocab_size must be >= 260 (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[PAD, BOS, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD)
    if out_dir is not None:
        save_lm_tokenizer(fast, out_dir)
    return fast


def save_lm_tokenizer(tokenizer: Any, path: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(path)`` (the ``lm_tokenizer`` part of a model directory)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))


def load_lm_tokenizer(path: str | os.PathLike) -> Any:
    """``AutoTokenizer.from_pretrained(path, local_files_only=True)``.

    Raises:
        DataError: no loadable tokenizer in ``path``.
    """
    from transformers import AutoTokenizer

    from speechfm.errors import DataError

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot load the LM tokenizer ({e})") from e
