"""Character tokenizer: one token per Unicode code point of the normalised text.

Vocabulary: ``<blk>`` (0), ``<unk>`` (1), the word-boundary token ``▁`` (2, stands for a
space) and the characters seen in training, most frequent first (ties by code point, so
training is deterministic).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechfm.errors import DataError
from speechfm.text.base import BLANK, UNK, UNK_SURFACE, Tokenizer
from speechfm.text.normalize import NormalizerConfig

WORD_TOKEN = "▁"
"""Token standing for the space between words (U+2581, as in sentencepiece)."""


class CharTokenizer(Tokenizer):
    """Characters of the normalised text, plus ``▁`` for word boundaries."""

    kind = "char"

    def __init__(self, chars: Sequence[str], normalizer: NormalizerConfig | None = None) -> None:
        super().__init__(normalizer)
        chars = list(chars)
        bad = [c for c in chars if len(c) != 1 or c.isspace() or c in (WORD_TOKEN,)]
        if bad:
            raise DataError(f"character tokenizer: invalid characters {bad!r}")
        if len(set(chars)) != len(chars):
            raise DataError("character tokenizer: duplicate characters in vocabulary")
        self._tokens = [BLANK, UNK, WORD_TOKEN, *chars]
        self._ids = {t: i for i, t in enumerate(self._tokens)}

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        normalizer: NormalizerConfig | None = None,
        min_count: int = 1,
        vocab_size: int | None = None,
    ) -> CharTokenizer:
        """Collect the characters of ``texts`` (after normalisation).

        Args:
            texts: training transcripts.
            normalizer: normalisation applied before counting and inside ``encode``.
            min_count: characters seen fewer times become ``<unk>``.
            vocab_size: cap on V (blank, ``<unk>`` and ``▁`` included); the rarest
                characters are dropped.
        """
        norm = normalizer or NormalizerConfig()
        probe = cls([], norm)
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(c for c in probe.normalize(t) if not c.isspace())
        chars = [c for c, n in counts.items() if n >= min_count]
        chars.sort(key=lambda c: (-counts[c], c))
        if vocab_size is not None:
            if vocab_size < 4:
                raise ValueError(f"vocab_size must be at least 4, got {vocab_size}")
            chars = chars[: vocab_size - 3]
        if not chars:
            raise DataError("character tokenizer: no characters in the training text")
        return cls(chars, norm)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def word_id(self) -> int:
        """Id of the word-boundary token ``▁``."""
        return 2

    def id_to_token(self, idx: int) -> str:
        return self._tokens[idx]

    def token_to_id(self, token: str) -> int:
        return self._ids.get(token, self.unk_id)

    def encode(self, text: str) -> list[int]:
        unk = self.unk_id
        return [self.word_id if c == " " else self._ids.get(c, unk) for c in self.normalize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        out = []
        for i in ids:
            i = int(i)
            if i == self.blank_id:
                continue
            out.append(
                " " if i == self.word_id else UNK_SURFACE if i == self.unk_id else self._tokens[i]
            )
        return " ".join("".join(out).split())

    def unknown_symbols(self, text: str) -> set[str]:
        return {c for c in self.normalize(text) if c != " " and c not in self._ids}

    def _state(self, directory: Path) -> dict:
        return {"word_token": WORD_TOKEN, "tokens": self._tokens}

    @classmethod
    def _from_state(cls, directory: Path, state: dict) -> CharTokenizer:
        tokens = state.get("tokens")
        if not tokens or tokens[:3] != [BLANK, UNK, WORD_TOKEN]:
            raise DataError(
                f"{directory}/tokenizer.json: a char tokenizer needs tokens starting with "
                f"{[BLANK, UNK, WORD_TOKEN]}"
            )
        return cls(tokens[3:], NormalizerConfig.from_dict(state.get("normalizer")))
