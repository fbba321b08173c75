"""speechfm.text: tokenizers (sentencepiece BPE/unigram, characters, IPA phones) and G2P.

Names are resolved lazily so that ``import speechfm.text`` pulls in neither
sentencepiece nor phonemizer; each is imported the first time it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Tokenizer": "speechfm.text.base",
    "load_tokenizer": "speechfm.text.base",
    "BLANK": "speechfm.text.base",
    "UNK": "speechfm.text.base",
    "BpeTokenizer": "speechfm.text.bpe",
    "CharTokenizer": "speechfm.text.char",
    "IpaTokenizer": "speechfm.text.ipa",
    "PhoneInventory": "speechfm.text.ipa",
    "phonemize": "speechfm.text.ipa",
    "NormalizerConfig": "speechfm.text.normalize",
    "normalize_text": "speechfm.text.normalize",
}

__all__ = [
    "BLANK",
    "UNK",
    "BpeTokenizer",
    "CharTokenizer",
    "IpaTokenizer",
    "NormalizerConfig",
    "PhoneInventory",
    "Tokenizer",
    "load_tokenizer",
    "normalize_text",
    "phonemize",
]

if TYPE_CHECKING:
    from speechfm.text.base import BLANK, UNK, Tokenizer, load_tokenizer
    from speechfm.text.bpe import BpeTokenizer
    from speechfm.text.char import CharTokenizer
    from speechfm.text.ipa import IpaTokenizer, PhoneInventory, phonemize
    from speechfm.text.normalize import NormalizerConfig, normalize_text


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speechfm.text' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
