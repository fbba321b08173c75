"""Text normalisation for ASR targets.

What a model is asked to transcribe must be written the same way in training, in
scoring and at inference, so every tokenizer applies one ``NormalizerConfig`` inside
``encode`` and saves it in ``tokenizer.json``. The default steps:

1. Unicode normal form (NFC), drop invisible characters (BOM, zero-width space, soft
   hyphen) and map control characters to spaces.
2. Language-aware lower-casing: Turkish/Azerbaijani ``I -> ı`` and ``İ -> i`` (plain
   ``str.lower`` would turn ``I`` into ``i`` and ``İ`` into ``i`` + combining dot);
   elsewhere ``İ -> i``. ``str.lower`` rather than ``casefold`` keeps ``ß`` (German
   spelling) intact; Greek final sigma is handled by Python.
3. Punctuation and symbols removed (replaced by a space), except apostrophes and
   hyphens *inside* a word (``don't``, ``l'homme``, ``e-mail``, ``үй-бүлө``) and
   per-language word-internal marks (Catalan ``l·l``). Typographic apostrophes
   (’ ‘) become ``'`` and the Unicode hyphens (‐ ‑) become ``-``; the modifier
   apostrophe ʼ is a letter (Ukrainian, Hawaiian) and is kept. ``. , :`` between two
   digits are kept too (``1,5``, ``3:30``).
4. Whitespace collapsed to single spaces.

Digits are kept: expanding numbers is language-specific and belongs to the data.

A multilingual tokenizer has one config (``lang=None``): normalise Turkish text with
``NormalizerConfig(lang="tr")`` during data preparation; lower-casing is idempotent, so
the tokenizer's own pass then leaves ``ı``/``i`` as prepared.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass

# Languages whose Latin alphabet has dotted/dotless i as separate letters.
TURKIC_DOTLESS_I = frozenset({"tr", "az", "crh", "gag", "tur", "aze"})

# Extra characters that are part of a word when between two letters.
_WORD_INTERNAL_EXTRA: dict[str, str] = {"ca": "·", "cat": "·"}

_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "'": "'"}
_HYPHENS = {"\u2010": "-", "\u2011": "-", "-": "-"}
_NUMBER_INTERNAL = frozenset(".,:")
# Invisible characters that carry nothing for ASR (ZWNJ U+200C is kept: Persian uses it).
_DROP = frozenset("\ufeff\u200b\u00ad\u2060")


@dataclass(kw_only=True)
class NormalizerConfig:
    """How transcripts are normalised before tokenisation."""

    lang: str | None = None
    """ISO 639 code for language-specific rules (Turkish dotted I, Catalan l·l)."""
    form: str = "NFC"
    """Unicode normal form: NFC, NFKC, NFD or NFKD."""
    lowercase: bool = True
    """Lower-case the text (language-aware)."""
    remove_punctuation: bool = True
    """Remove punctuation and symbols, keeping word-internal apostrophes and hyphens."""
    keep_apostrophes: bool = True
    """Keep ``'`` inside words (don't, l'homme)."""
    keep_hyphens: bool = True
    """Keep ``-`` inside words (e-mail)."""

    def validate(self) -> None:
        if self.form not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"form must be NFC, NFKC, NFD or NFKD, got {self.form!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> NormalizerConfig:
        cfg = cls(**(d or {}))
        cfg.validate()
        return cfg


def lowercase(text: str, lang: str | None = None) -> str:
    """Lower-case ``text`` with the Turkic dotted/dotless I rule where ``lang`` needs it."""
    if lang in TURKIC_DOTLESS_I:
        text = text.replace("I", "ı").replace("İ", "i")
    else:
        text = text.replace("İ", "i")
    return text.lower()


def _is_word_char(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c)[0] == "M"


def _remove_punctuation(text: str, cfg: NormalizerConfig) -> str:
    internal = _WORD_INTERNAL_EXTRA.get(cfg.lang or "", "")
    out: list[str] = []
    n = len(text)
    for i, c in enumerate(text):
        if c in _APOSTROPHES and cfg.keep_apostrophes:
            c_norm = _APOSTROPHES[c]
        elif c in _HYPHENS and cfg.keep_hyphens:
            c_norm = _HYPHENS[c]
        elif c in internal:
            c_norm = c
        elif c in _NUMBER_INTERNAL:
            # 1,5 / 1.000 / 3:30 stay one token: splitting the digits changes the reading
            digits = 0 < i < n - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
            out.append(c if digits else " ")
            continue
        else:
            cat = unicodedata.category(c)
            out.append(" " if cat[0] in "PS" else c)
            continue
        inside = 0 < i < n - 1 and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1])
        out.append(c_norm if inside else " ")
    return "".join(out)


def normalize_text(text: str, config: NormalizerConfig | None = None) -> str:
    """Normalise one transcript per ``config`` (default: NFC, lower-case, no punctuation)."""
    cfg = config or NormalizerConfig()
    text = unicodedata.normalize(cfg.form, text)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text if c not in _DROP)
    if cfg.lowercase:
        text = lowercase(text, cfg.lang)
        # lower() can decompose (İ in non-Turkic text handled above; others rare)
        text = unicodedata.normalize(cfg.form, text)
    if cfg.remove_punctuation:
        text = _remove_punctuation(text, cfg)
    return " ".join(text.split())
