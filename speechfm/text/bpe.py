"""Subword tokenizer on sentencepiece (BPE or unigram).

Blank handling: the model is trained with sentencepiece's padding piece *named*
``<blk>`` at id 0 (``pad_id=0``) and ``<unk>`` at id 1, without BOS/EOS. Sentencepiece
never emits the padding id from ``encode`` and skips it in ``decode``, so the
sentencepiece ids *are* the speechfm ids: no offset to add or subtract, and the saved
``spm.model`` works unchanged in other sentencepiece consumers (sherpa-onnx, icefall-style
decoders) with blank 0.

Normalisation is speechfm's (``NormalizerConfig``); sentencepiece's own is set to
``identity`` so the two never disagree. ``byte_fallback`` is off by default: characters
outside the vocabulary become ``<unk>`` and are reported by ``unknown_symbols`` (and by
``speechfm data check --tokenizer``), rather than silently turning into byte tokens.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechfm.errors import DataError
from speechfm.text.base import BLANK, UNK, Tokenizer
from speechfm.text.normalize import NormalizerConfig, normalize_text

MODEL_FILE = "spm.model"
MODEL_TYPES = ("bpe", "unigram")


class BpeTokenizer(Tokenizer):
    """Sentencepiece BPE or unigram model; ``kind`` is ``"bpe"`` or ``"unigram"``."""

    def __init__(
        self, model_proto: bytes, model_type: str, normalizer: NormalizerConfig | None = None
    ) -> None:
        super().__init__(normalizer)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        import sentencepiece as spm

        self.kind = model_type  # instance attribute: one class serves both kinds
        self._proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self._proto)
        if self.sp.id_to_piece(0) != BLANK or self.sp.id_to_piece(1) != UNK:
            raise DataError(
                f"sentencepiece model must have {BLANK} at id 0 and {UNK} at id 1, got "
                f"{self.sp.id_to_piece(0)!r} and {self.sp.id_to_piece(1)!r}"
            )
        self._byte_fallback = any(self.sp.is_byte(i) for i in range(self.sp.get_piece_size()))

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        *,
        character_coverage: float = 1.0,
        user_defined_symbols: Sequence[str] = (),
        byte_fallback: bool = False,
        normalizer: NormalizerConfig | None = None,
        max_sentences: int = 2_000_000,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> BpeTokenizer:
        """Train a sentencepiece model on ``texts`` (normalised first).

        Args:
            texts: training transcripts.
            vocab_size: V including ``<blk>`` and ``<unk>``. With little text the
                result may be smaller (``hard_vocab_limit`` is off); read ``vocab_size``.
            model_type: ``"bpe"`` or ``"unigram"``.
            character_coverage: fraction of characters covered; 1.0 for alphabetic
                scripts, ~0.9995 for CJK.
            user_defined_symbols: pieces always kept whole (e.g. ``"<noise>"``).
            byte_fallback: encode unknown characters as UTF-8 byte pieces.
            normalizer: normalisation applied before training and inside ``encode``.
            max_sentences: sentencepiece samples at most this many sentences.
            num_threads: trainer threads (default: up to 4 CPU cores).
            seed: sentencepiece's random seed (sentence sampling), for reproducibility.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be at least 3, got {vocab_size}")
        if not 0.0 < character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
        import sentencepiece as spm

        norm = normalizer or NormalizerConfig()
        norm.validate()
        sentences = [s for s in (normalize_text(t, norm) for t in texts) if s]
        if not sentences:
            raise DataError("sentencepiece training: no non-empty text after normalisation")
        spm.set_random_generator_seed(seed)
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=buf,
                model_type=model_type,
                vocab_size=vocab_size,
                character_coverage=character_coverage,
                pad_id=0,
                pad_piece=BLANK,
                unk_id=1,
                unk_piece=UNK,
                bos_id=-1,
                eos_id=-1,
                user_defined_symbols=list(user_defined_symbols),
                byte_fallback=byte_fallback,
                normalization_rule_name="identity",
                hard_vocab_limit=False,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                num_threads=num_threads or min(4, os.cpu_count() or 1),
                minloglevel=2,
            )
        except RuntimeError as e:
            raise DataError(f"sentencepiece {model_type} training failed: {e}") from e
        return cls(buf.getvalue(), model_type, norm)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def unk_id(self) -> int:
        return 1

    def id_to_token(self, idx: int) -> str:
        return self.sp.id_to_piece(int(idx))

    def token_to_id(self, token: str) -> int:
        return self.sp.piece_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(self.normalize(text), out_type=int)

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return self.sp.encode([self.normalize(t) for t in texts], out_type=int)

    def encode_pieces(self, text: str) -> list[str]:
        """The pieces of ``encode(text)`` (for inspection)."""
        return self.sp.encode(self.normalize(text), out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        text = self.sp.decode([int(i) for i in ids if int(i) != self.blank_id])
        return " ".join(text.split())

    def unknown_symbols(self, text: str) -> set[str]:
        if self._byte_fallback:  # every character has a byte encoding
            return set()
        return {
            c
            for c in set(self.normalize(text))
            if not c.isspace() and self.sp.piece_to_id(c) == self.unk_id
        }

    def _state(self, directory: Path) -> dict:
        (directory / MODEL_FILE).write_bytes(self._proto)
        return {"model_file": MODEL_FILE, "model_type": self.kind}

    @classmethod
    def _from_state(cls, directory: Path, state: dict) -> BpeTokenizer:
        path = directory / state.get("model_file", MODEL_FILE)
        if not path.is_file():
            raise DataError(f"{path}: sentencepiece model file is missing")
        return cls(
            path.read_bytes(),
            state.get("model_type", state["kind"]),
            NormalizerConfig.from_dict(state.get("normalizer")),
        )
