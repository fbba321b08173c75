"""The tokenizer interface shared by BPE/unigram, character and IPA tokenizers.

Every tokenizer reserves id 0 for the CTC/transducer blank (``<blk>``), never produced
by ``encode``, and has an ``<unk>`` id for symbols it cannot represent. A tokenizer
saves itself to a directory holding ``tokenizer.json`` (``{"kind": ..., ...}``) plus
its own files; ``load_tokenizer(dir)`` rebuilds any kind.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from speechfm.errors import DataError
from speechfm.text.normalize import NormalizerConfig, normalize_text

BLANK = "<blk>"
"""Token of the blank, always id 0."""
UNK = "<unk>"
"""Token for symbols outside the vocabulary."""
UNK_SURFACE = "⁇"
"""What an ``<unk>`` id decodes to (sentencepiece's choice, used by every kind)."""
TOKENIZER_JSON = "tokenizer.json"
KINDS = ("bpe", "unigram", "char", "ipa")


class Tokenizer(abc.ABC):
    """Maps transcripts to token ids (1..V-1) and back; id 0 is the blank."""

    kind: str
    """``"bpe"``, ``"unigram"``, ``"char"`` or ``"ipa"``; saved in tokenizer.json."""
    blank_id: ClassVar[int] = 0

    def __init__(self, normalizer: NormalizerConfig | None = None) -> None:
        self.normalizer = normalizer or NormalizerConfig()
        self.normalizer.validate()

    # --- vocabulary -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids V, blank and ``<unk>`` included."""

    @property
    @abc.abstractmethod
    def unk_id(self) -> int:
        """Id of ``<unk>``."""

    @abc.abstractmethod
    def id_to_token(self, idx: int) -> str:
        """Token string of id ``idx`` (``<blk>`` for 0)."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int:
        """Id of ``token``, or ``unk_id`` when it is not in the vocabulary."""

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order."""
        return [self.id_to_token(i) for i in range(self.vocab_size)]

    # --- text -------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """Apply the saved normalisation (what ``encode`` sees)."""
        return normalize_text(text, self.normalizer)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Normalise and tokenise one transcript; ids are in [1, V)."""

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """``encode`` each text."""
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to (normalised) text; blank ids are skipped, ``<unk>`` gives ⁇."""

    @abc.abstractmethod
    def unknown_symbols(self, text: str) -> set[str]:
        """Characters (or phones) of the normalised ``text`` the vocabulary lacks."""

    # --- persistence ------------------------------------------------------------
    @abc.abstractmethod
    def _state(self, directory: Path) -> dict:
        """Write own files into ``directory`` and return the tokenizer.json fields."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, directory: Path, state: dict) -> Tokenizer:
        """Rebuild from tokenizer.json fields and own files in ``directory``."""

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and own files into ``directory``; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "blank_id": self.blank_id,
            "unk_id": self.unk_id,
            "normalizer": self.normalizer.to_dict(),
        }
        state.update(self._state(directory))
        (directory / TOKENIZER_JSON).write_text(
            json.dumps(state, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        return directory

    def _check_ids(self, ids: Sequence[int]) -> None:
        v = self.vocab_size
        for i in ids:
            if not 0 <= int(i) < v:
                raise ValueError(f"token id {i} outside [0, {v}) for this {self.kind} tokenizer")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Rebuild a tokenizer saved with ``Tokenizer.save`` (any kind)."""
    directory = Path(directory)
    path = directory / TOKENIZER_JSON
    if not path.is_file():
        raise DataError(f"{path}: no tokenizer here (tokenizer.json is missing)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    kind = state.get("kind")
    # explicit dispatch: each kind's module is imported only when needed
    if kind in ("bpe", "unigram"):
        from speechfm.text.bpe import BpeTokenizer as cls
    elif kind == "char":
        from speechfm.text.char import CharTokenizer as cls
    elif kind == "ipa":
        from speechfm.text.ipa import IpaTokenizer as cls
    else:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r} (expected one of {KINDS})")
    tok = cls._from_state(directory, state)
    if tok.vocab_size != state.get("vocab_size", tok.vocab_size):
        raise DataError(
            f"{path}: vocab_size {state['vocab_size']} does not match the files ({tok.vocab_size})"
        )
    return tok
