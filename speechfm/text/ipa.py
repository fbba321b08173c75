"""IPA grapheme-to-phoneme conversion (espeak-ng through phonemizer) and IPA tokens.

Output format (the project convention): phones separated by single spaces, words by
``" | "``, e.g. ``"h ə l ˈoʊ | w ˈɜː l d"``. Phone boundaries are espeak's own (its
phoneme separator), so affricates (``tʃ``), diphthongs (``oʊ``), long phones (``iː``)
and secondary articulations (``tʲ``) stay one phone; a stress mark is attached to the
phone it precedes (the syllable nucleus, as espeak places it).

Decisions worth knowing:

* The text is phonemized as given (no lower-casing or punctuation clean-up beyond
  phonemizer's), because the synthetic TTS corpus voices the same text with the same
  espeak-ng: the transcript must describe what espeak *says*.
* Language switches: when a word looks foreign (a Latin-script word in Russian text,
  say) espeak reads it with another voice and marks it ``(en)...(ru)``. The default
  ``language_switch="remove-flags"`` keeps those phones and drops the markers: the
  audio synthesised from the same text does contain them, so dropping the utterance
  (``"remove-utterance"``, which returns ``""`` for it) would throw away good data.
* Some espeak-ng voices (ky, fr, ru, cmn, vi, ...) define phonemes without an IPA name and
  leak ASCII mnemonics (``dZ``, ``t[``, ``u:``, ``ə-``, ``s.``, tone digits); these are
  mapped to IPA here (see ``_MNEMONIC_FIXES``) so that inventories stay clean.
* Word boundaries are espeak's: numbers expand to several words and espeak may join
  clitics ("of the" -> one word), so the word count can differ from ``text.split()``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from speechfm.errors import DataError
from speechfm.text.base import BLANK, UNK, UNK_SURFACE, Tokenizer
from speechfm.text.normalize import NormalizerConfig

WORD_SEP = " | "
"""Separator between words in an IPA transcript."""

STRESS_MARKS = frozenset("ˈˌ")
LENGTH_MARKS = frozenset("ːˑ")
TONE_LETTERS = frozenset("˥˦˧˨˩꜒꜓꜔꜕꜖")
# Combining tone diacritics (grave, acute, circumflex, macron, double acute, caron,
# double grave and the contour tones U+1DC4-U+1DC9); the tilde U+0303 is nasality, kept.
TONE_DIACRITICS = frozenset("\u0300\u0301\u0302\u0304\u030b\u030c\u030f") | frozenset(
    chr(c) for c in range(0x1DC4, 0x1DCA)
)

# ISO 639-1 (or 639-3) code -> espeak-ng voice, where the voice name is not the code.
LANG_TO_VOICE: dict[str, str] = {
    "en": "en-us",
    "fr": "fr-fr",
    "zh": "cmn",
    "no": "nb",
    "pt-br": "pt-br",
    "eng": "en-us",
    "fra": "fr-fr",
    "spa": "es",
    "deu": "de",
    "rus": "ru",
    "tur": "tr",
    "pol": "pl",
    "ita": "it",
    "nld": "nl",
    "swe": "sv",
    "kir": "ky",
    "tat": "tt",
    "ind": "id",
    "ukr": "uk",
    "kaz": "kk",
}

# Voices whose espeak output carries tone numbers (1-7) after the vowel.
_TONAL_VOICES = frozenset(
    {"cmn", "cmn-latn-pinyin", "yue", "hak", "vi", "vi-vn-x-central", "vi-vn-x-south", "th", "shn"}
)

# espeak phonemes without an IPA name come out as ASCII mnemonics (Kirshenbaum-like);
# applied in order, longest first where one is a prefix of another.
_MNEMONIC_FIXES: tuple[tuple[str, str], ...] = (
    ("ts.", "ʈʂ"),
    ("s.", "ʂ"),
    ("z.", "ʐ"),
    ("t.", "ʈ"),
    ("d.", "ɖ"),
    ("n.", "ɳ"),
    ("r.", "ɽ"),
    ("l.", "ɭ"),
    ("dZ", "dʒ"),
    ("tS", "tʃ"),
    ('u"', "ʉ"),
    ('"', "\u0308"),  # centralised
    ("S", "ʃ"),
    ("Z", "ʒ"),
    ("N", "ŋ"),
    ("X", "χ"),
    (":", "ː"),
    ("[", "\u032a"),  # dental
    ("-", ""),  # espeak variant marker (fr ə-, ko t-): same phone
    (".", ""),  # remaining variant dots (ar a.)
)
_LANG_FIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "ky": (("oe", "ø"),),
    "sv": (("sx", "ɧ"),),  # the Swedish sj-sound
    "cmn": (("i.", "ɨ"),),  # Mandarin apical vowel (zhi, shi, si)
    "cmn-latn-pinyin": (("i.", "ɨ"),),
}
_NEEDS_FIX = re.compile(r"[A-Z:\[\]\-.\"]")
_ASPIRATED = re.compile(r"(?<=[ptkcqsʂɕʈ])h$")
_DIGITS = re.compile(r"[0-9]")


def espeak_voice(lang: str) -> str:
    """Map an ISO 639 code (or an espeak voice name) to an espeak-ng voice.

    Raises DataError naming ``lang`` when espeak-ng has no such voice.
    """
    voice = LANG_TO_VOICE.get(lang, lang)
    voices = _espeak_voices()
    if voice not in voices:
        raise DataError(
            f"language {lang!r} has no espeak-ng voice (tried {voice!r}); "
            f"known: {', '.join(sorted(voices))}"
        )
    return voice


@functools.cache
def _setup_espeak() -> None:
    # Point phonemizer at the espeak-ng we ship/found before any backend is created.
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    from speechfm.text.espeak import espeak_paths

    lib, data = espeak_paths()
    EspeakWrapper.set_library(lib)
    if data is not None:
        EspeakWrapper.set_data_path(data)
    # phonemizer's njobs > 1 workers (joblib/loky) rebuild the wrapper in fresh processes,
    # where only these environment variables tell it where espeak-ng is.
    os.environ["PHONEMIZER_ESPEAK_LIBRARY"] = lib
    if data is not None:
        os.environ["PHONEMIZER_ESPEAK_DATA_PATH"] = data


@functools.cache
def _espeak_voices() -> frozenset[str]:
    _setup_espeak()
    from phonemizer.backend import EspeakBackend

    return frozenset(EspeakBackend.supported_languages())


@functools.lru_cache(maxsize=64)
def _backend(voice: str, language_switch: str):
    _setup_espeak()
    from phonemizer.backend import EspeakBackend

    # phonemizer logs one warning per batch with language switches; that is expected
    # (see module docstring), so route it to a quiet child logger.
    quiet = logging.getLogger(f"{__name__}.phonemizer")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)
    return EspeakBackend(
        voice,
        punctuation_marks=_PUNCTUATION,
        preserve_punctuation=False,
        with_stress=True,
        language_switch=language_switch,
        logger=quiet,
    )


# phonemizer's default marks plus typographic ones seen in real text (UDHR).
_PUNCTUATION = ';:,.!?¡¿—…"«»“”(){}[]„‚‘’‹›《》「」『』、。，！？：；–'


def _fix_phone(phone: str, voice: str) -> str:
    for old, new in _LANG_FIXES.get(voice, ()):
        phone = phone.replace(old, new)
    if voice in _TONAL_VOICES:
        core = phone.lstrip("ˈˌ")
        # espeak writes tone 3 through its Kirshenbaum table as "ɜ"; restore the digit
        if len(core) > 1 and core.endswith("ɜ"):
            phone = phone[:-1] + "3"
    if _NEEDS_FIX.search(phone):
        for old, new in _MNEMONIC_FIXES:
            phone = phone.replace(old, new)
    if len(phone) > 1:
        phone = _ASPIRATED.sub("ʰ", phone)
    if voice not in _TONAL_VOICES and _DIGITS.search(phone):
        # a digit outside tonal voices is an espeak variant number with no IPA (fa "q 1")
        phone = _DIGITS.sub("", phone)
    return phone


def _is_attach_right(tok: str) -> bool:
    return all(c in STRESS_MARKS for c in tok)


def _is_attach_left(tok: str) -> bool:
    # length marks, modifier letters and combining diacritics belong to the previous phone
    return all(
        c in LENGTH_MARKS or unicodedata.combining(c) or 0x2B0 <= ord(c) <= 0x2FF for c in tok
    ) and not any(c in STRESS_MARKS for c in tok)


def _strip(phone: str, *, strip_stress: bool, strip_length: bool, strip_tones: bool) -> str:
    if strip_stress:
        phone = "".join(c for c in phone if c not in STRESS_MARKS)
    if strip_length:
        phone = "".join(c for c in phone if c not in LENGTH_MARKS)
    if strip_tones:
        phone = "".join(
            c
            for c in phone
            if c not in TONE_LETTERS and c not in TONE_DIACRITICS and not c.isdigit()
        )
    # a phone left as only a stress mark carries no segment
    return "" if all(c in STRESS_MARKS for c in phone) else phone


def clean_ipa(
    raw: str,
    voice: str,
    *,
    strip_stress: bool = False,
    strip_length: bool = False,
    strip_tones: bool = False,
) -> str:
    """Normalise one raw phonemizer output to the speechfm IPA format.

    Collapses stray spaces (left around removed language-switch flags), maps leaked
    espeak mnemonics to IPA, re-attaches lone stress/length marks and applies the strip
    options. Empty words are dropped.
    """
    words: list[str] = []
    for word in raw.split("|"):
        toks = [_fix_phone(t, voice) for t in word.split()]
        phones: list[str] = []
        pending = ""
        for tok in toks:
            if not tok:
                continue
            if _is_attach_right(tok):
                pending += tok
                continue
            if phones and not pending and _is_attach_left(tok):
                phones[-1] += tok
                continue
            phones.append(pending + tok)
            pending = ""
        stripped = [
            p
            for p in (
                _strip(
                    p,
                    strip_stress=strip_stress,
                    strip_length=strip_length,
                    strip_tones=strip_tones,
                )
                for p in phones
            )
            if p
        ]
        if stripped:
            words.append(" ".join(stripped))
    return WORD_SEP.join(words)


def phonemize(
    texts: Sequence[str],
    lang: str,
    *,
    strip_stress: bool = False,
    strip_length: bool = False,
    strip_tones: bool = False,
    njobs: int = 1,
    language_switch: str = "remove-flags",
) -> list[str]:
    """Transcribe ``texts`` (one utterance each) to IPA with espeak-ng.

    Args:
        texts: utterances in language ``lang``; empty strings give ``""``.
        lang: ISO 639-1 code (``en``, ``es``, ``ky``, ...), ISO 639-3 code, or an
            espeak-ng voice name (``en-gb``).
        strip_stress: drop ˈ and ˌ.
        strip_length: drop ː and ˑ.
        strip_tones: drop tone letters, combining tone diacritics and espeak tone digits.
        njobs: worker processes for phonemizer (worth it above a few thousand lines).
        language_switch: ``"remove-flags"`` (keep foreign-voice phones) or
            ``"remove-utterance"`` (return ``""`` for utterances with a switch).

    Returns:
        One IPA string per input, phones separated by spaces and words by ``" | "``.
    """
    if isinstance(texts, str):
        raise TypeError("phonemize() takes a list of texts, not a single string")
    if language_switch not in ("remove-flags", "remove-utterance"):
        raise ValueError(
            f"language_switch must be 'remove-flags' or 'remove-utterance', got {language_switch!r}"
        )
    voice = espeak_voice(lang)
    # One line per utterance: phonemizer splits its input on newlines.
    prepared = [" ".join(unicodedata.normalize("NFC", t).split()) for t in texts]
    todo = [i for i, t in enumerate(prepared) if t]
    out = [""] * len(prepared)
    if not todo:
        return out
    from phonemizer.separator import Separator

    raw = _backend(voice, language_switch).phonemize(
        [prepared[i] for i in todo],
        separator=Separator(phone=" ", word=" | ", syllable=""),
        strip=True,
        njobs=njobs,
    )
    if len(raw) != len(todo):  # would silently misalign transcripts; never accept
        raise DataError(f"espeak-ng returned {len(raw)} transcripts for {len(todo)} texts ({lang})")
    for i, r in zip(todo, raw, strict=True):
        out[i] = clean_ipa(
            r,
            voice,
            strip_stress=strip_stress,
            strip_length=strip_length,
            strip_tones=strip_tones,
        )
    return out


def ipa_words(ipa: str) -> list[list[str]]:
    """Split an IPA transcript into words of phones: ``"a b | c"`` -> ``[["a","b"],["c"]]``."""
    return [w.split() for w in ipa.split("|") if w.strip()]


# --------------------------------------------------------------------------------------
# Phone inventories and the IPA tokenizer
# --------------------------------------------------------------------------------------

WORD_TOKEN = "|"
"""Word-boundary token of the IPA tokenizer (the ``|`` of the transcript format)."""
INVENTORY_FILE = "inventory.json"


class PhoneInventory:
    """Phone counts per language, built from IPA transcripts; saved as JSON.

    JSON layout: ``{"format": "speechfm-phone-inventory", "version": 1,
    "languages": {lang: {phone: count}}}``.
    """

    def __init__(self, counts: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._counts: dict[str, Counter[str]] = {
            lang: Counter(c) for lang, c in (counts or {}).items()
        }

    def add(self, ipa: str, lang: str) -> None:
        """Count the phones of one transcript (word boundaries are not phones)."""
        phones = [p for p in unicodedata.normalize("NFC", ipa).split() if p != WORD_TOKEN]
        self._counts.setdefault(lang, Counter()).update(phones)

    @classmethod
    def from_transcripts(cls, items: Iterable[tuple[str, str]]) -> PhoneInventory:
        """Build from ``(lang, ipa)`` pairs."""
        inv = cls()
        for lang, ipa in items:
            inv.add(ipa, lang)
        return inv

    @property
    def languages(self) -> list[str]:
        return sorted(self._counts)

    def counts(self, lang: str | None = None) -> Counter[str]:
        """Phone counts of one language, or of all languages together (``None``)."""
        if lang is not None:
            if lang not in self._counts:
                raise DataError(f"phone inventory has no language {lang!r} ({self.languages})")
            return Counter(self._counts[lang])
        total: Counter[str] = Counter()
        for c in self._counts.values():
            total.update(c)
        return total

    def phones(self, lang: str | None = None, min_count: int = 1) -> list[str]:
        """Phones seen at least ``min_count`` times, most frequent first (ties by name)."""
        c = self.counts(lang)
        return sorted((p for p, n in c.items() if n >= min_count), key=lambda p: (-c[p], p))

    def merged(self, other: PhoneInventory) -> PhoneInventory:
        """A new inventory with the counts of both."""
        out = PhoneInventory(self._counts)
        for lang, c in other._counts.items():
            out._counts.setdefault(lang, Counter()).update(c)
        return out

    @classmethod
    def from_lexicons(
        cls,
        lexicons: Mapping[str, Mapping[str, Sequence[Sequence[str]]]],
        word_counts: Mapping[str, Mapping[str, int]] | None = None,
    ) -> PhoneInventory:
        """Build from one lexicon per language (``{lang: Lexicon}`` or plain dicts).

        Each pronunciation counts once, or ``word_counts[lang][word]`` times when given
        (token counts of the training text, so that the counts match what
        ``from_transcripts`` would give); a word of a lexicon with several pronunciations
        counts each of them. Word-boundary tokens are not phones.
        """
        inv = cls()
        for lang, lex in lexicons.items():
            c = inv._counts.setdefault(lang, Counter())
            weights = (word_counts or {}).get(lang)
            for word, prons in lex.items():
                n = 1 if weights is None else weights.get(word, 0)
                if n <= 0:
                    continue
                for pron in prons:
                    for p in pron:
                        p = unicodedata.normalize("NFC", p)
                        if p and p != WORD_TOKEN:
                            c[p] += n
        return inv

    def subset(self, langs: str | Iterable[str]) -> PhoneInventory:
        """A new inventory with only the counts of ``langs`` (one code or several)."""
        langs = [langs] if isinstance(langs, str) else list(langs)
        missing = [lang for lang in langs if lang not in self._counts]
        if missing:
            raise DataError(f"phone inventory has no language {missing} ({self.languages})")
        return PhoneInventory({lang: self._counts[lang] for lang in langs})

    def to_dict(self) -> dict:
        return {
            "format": "speechfm-phone-inventory",
            "version": 1,
            "languages": {
                lang: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
                for lang, c in sorted(self._counts.items())
            },
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> PhoneInventory:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read phone inventory ({e})") from e
        if d.get("format") != "speechfm-phone-inventory":
            raise DataError(f"{path}: not a speechfm phone inventory")
        return cls(d["languages"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhoneInventory) and {
            k: v for k, v in self._counts.items() if v
        } == {k: v for k, v in other._counts.items() if v}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lang}: {len(c)}" for lang, c in sorted(self._counts.items()))
        return f"PhoneInventory({sizes})"


def _phone_list(x: PhoneInventory | Iterable[str]) -> list[str]:
    if isinstance(x, PhoneInventory):
        return x.phones()
    return list(dict.fromkeys(unicodedata.normalize("NFC", p) for p in x))


def shared_phones(
    a: PhoneInventory | Iterable[str], b: PhoneInventory | Iterable[str]
) -> list[str]:
    """Phones of ``a`` that ``b`` has too, in ``a``'s order (most frequent first).

    Either side is an inventory (all its languages; ``inv.subset(lang)`` for one) or a
    collection of phones (a tokenizer's ``language_phones[lang]``, ``Lexicon.phones()``).
    """
    known = set(_phone_list(b))
    return [p for p in _phone_list(a) if p in known]


def _reduced(phone: str, level: int) -> str:
    # level 1: no stress; 2: nor length or tones; 3: nor any diacritic or modifier letter
    if level >= 1:
        phone = _strip(phone, strip_stress=True, strip_length=level >= 2, strip_tones=level >= 2)
    if level >= 3:
        phone = "".join(
            c for c in phone if not unicodedata.combining(c) and not 0x2B0 <= ord(c) <= 0x2FF
        )
    return phone


def map_phones(
    phones: PhoneInventory | Iterable[str],
    known: PhoneInventory | Iterable[str],
    *,
    fallback: bool = True,
) -> dict[str, str | None]:
    """Map the phones of a (new) language onto a known (pretraining) phone set.

    Each phone maps to itself when ``known`` has it; with ``fallback``, else to the
    first known phone (in ``known``'s order, most frequent first) that is equal once
    stress is removed, then once length and tones are removed too, then once every
    diacritic and modifier letter is removed (``ˈa`` -> ``a``, ``ɨː`` -> ``ɨ``,
    ``tʲ`` -> ``t``); else to None: a new phone, whose output row must be learnt from
    scratch. Used to initialise an output layer for an unseen language from a
    pretrained one (copy the row of the mapped phone).
    """
    known_list = _phone_list(known)
    known_set = set(known_list)
    index: list[dict[str, str]] = []
    if fallback:
        for level in (1, 2, 3):
            d: dict[str, str] = {}
            for k in known_list:
                if r := _reduced(k, level):
                    d.setdefault(r, k)
            index.append(d)
    out: dict[str, str | None] = {}
    for p in _phone_list(phones):
        target = p if p in known_set else None
        for level, d in enumerate(index, 1):
            if target is not None:
                break
            r = _reduced(p, level)
            target = d.get(r) if r else None
        out[p] = target
    return out


class IpaTokenizer(Tokenizer):
    """Phones as tokens: ``<blk>`` 0, ``<unk>`` 1, ``|`` 2 (if word boundaries), phones.

    The vocabulary is shared by all languages (one output layer for a multilingual
    model); ``language_ids(lang)`` gives a language's subset (for masking logits) and
    ``encode(text, lang=...)`` maps phones outside that subset to ``<unk>``. The strip
    options are applied inside ``encode``, so a stress-free tokenizer accepts stressed
    transcripts.
    """

    kind = "ipa"

    def __init__(
        self,
        phones: Sequence[str],
        *,
        word_boundary: bool = True,
        strip_stress: bool = False,
        strip_length: bool = False,
        strip_tones: bool = False,
        language_phones: Mapping[str, Iterable[str]] | None = None,
        inventory: PhoneInventory | None = None,
    ) -> None:
        super().__init__(NormalizerConfig(lowercase=False, remove_punctuation=False))
        self.inventory = inventory
        """The counts the vocabulary was built from (saved as inventory.json), if any."""
        phones = list(phones)
        bad = [p for p in phones if not p or any(c.isspace() for c in p) or p == WORD_TOKEN]
        if bad or len(set(phones)) != len(phones):
            raise DataError(f"IPA tokenizer: invalid or duplicate phones {bad!r}")
        self.word_boundary = word_boundary
        self.strip_stress = strip_stress
        self.strip_length = strip_length
        self.strip_tones = strip_tones
        self._tokens = [BLANK, UNK] + ([WORD_TOKEN] if word_boundary else []) + phones
        self._ids = {t: i for i, t in enumerate(self._tokens)}
        self.language_phones: dict[str, frozenset[str]] = {
            lang: frozenset(p for p in ps if p in self._ids)
            for lang, ps in (language_phones or {}).items()
        }

    @classmethod
    def from_inventory(
        cls,
        inventory: PhoneInventory,
        *,
        languages: Sequence[str] | None = None,
        min_count: int = 1,
        max_phones: int | None = None,
        word_boundary: bool = True,
        strip_stress: bool = False,
        strip_length: bool = False,
        strip_tones: bool = False,
    ) -> IpaTokenizer:
        """Build the vocabulary from an inventory.

        Args:
            inventory: phone counts per language.
            languages: restrict to these languages' phones (default: all, the union).
            min_count: drop phones seen fewer times (over the chosen languages).
            max_phones: keep only the most frequent phones.
            word_boundary: add the ``|`` token.
            strip_stress, strip_length, strip_tones: remove these marks from phones
                (in the vocabulary and inside ``encode``).
        """
        langs = list(languages) if languages is not None else inventory.languages
        strip = functools.partial(
            _strip, strip_stress=strip_stress, strip_length=strip_length, strip_tones=strip_tones
        )
        per_lang: dict[str, Counter[str]] = {}
        for lang in langs:
            c: Counter[str] = Counter()
            for p, n in inventory.counts(lang).items():
                if s := strip(p):
                    c[s] += n
            per_lang[lang] = c
        total: Counter[str] = Counter()
        for c in per_lang.values():
            total.update(c)
        phones = sorted(
            (p for p, n in total.items() if n >= min_count), key=lambda p: (-total[p], p)
        )
        if max_phones is not None:
            phones = phones[:max_phones]
        if not phones:
            raise DataError(f"IPA tokenizer: no phones in the inventory for {langs}")
        return cls(
            phones,
            word_boundary=word_boundary,
            strip_stress=strip_stress,
            strip_length=strip_length,
            strip_tones=strip_tones,
            language_phones={lang: list(c) for lang, c in per_lang.items()},
            inventory=inventory,
        )

    @classmethod
    def train(cls, items: Iterable[tuple[str, str]], **kwargs) -> IpaTokenizer:
        """Build from ``(lang, ipa)`` transcripts; keyword args as ``from_inventory``."""
        return cls.from_inventory(PhoneInventory.from_transcripts(items), **kwargs)

    # --- vocabulary ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def word_id(self) -> int | None:
        """Id of ``|``, or None without word boundaries."""
        return 2 if self.word_boundary else None

    def id_to_token(self, idx: int) -> str:
        return self._tokens[idx]

    def token_to_id(self, token: str) -> int:
        return self._ids.get(token, self.unk_id)

    def language_ids(self, lang: str) -> list[int]:
        """Ids a language can produce: blank, ``<unk>``, ``|`` and its phones (sorted)."""
        allowed = self._lang_subset(lang)
        n_special = 3 if self.word_boundary else 2
        return [i for i, t in enumerate(self._tokens) if i < n_special or t in allowed]

    def _lang_subset(self, lang: str) -> frozenset[str]:
        if lang not in self.language_phones:
            raise DataError(
                f"IPA tokenizer has no phone set for language {lang!r} "
                f"(has {sorted(self.language_phones)})"
            )
        return self.language_phones[lang]

    # --- text -----------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """NFC, strip options, one space between phones, `` | `` between words."""
        words = []
        for w in unicodedata.normalize("NFC", text).split(WORD_TOKEN):
            phones = [
                s
                for s in (
                    _strip(
                        p,
                        strip_stress=self.strip_stress,
                        strip_length=self.strip_length,
                        strip_tones=self.strip_tones,
                    )
                    for p in w.split()
                )
                if s
            ]
            if phones:
                words.append(" ".join(phones))
        return (WORD_SEP if self.word_boundary else " ").join(words)

    def encode(self, text: str, lang: str | None = None) -> list[int]:
        allowed = self._lang_subset(lang) if lang is not None else None
        unk = self.unk_id
        out = []
        for p in self.normalize(text).split():
            if p == WORD_TOKEN:
                out.append(self._ids[WORD_TOKEN])
            elif allowed is not None and p not in allowed:
                out.append(unk)
            else:
                out.append(self._ids.get(p, unk))
        return out

    def encode_batch(self, texts: Iterable[str], lang: str | None = None) -> list[list[int]]:
        return [self.encode(t, lang) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        toks = [
            UNK_SURFACE if int(i) == self.unk_id else self._tokens[int(i)]
            for i in ids
            if int(i) != self.blank_id
        ]
        return " ".join(toks)

    def unknown_symbols(self, text: str, lang: str | None = None) -> set[str]:
        allowed = self._lang_subset(lang) if lang is not None else None
        return {
            p
            for p in self.normalize(text).split()
            if p != WORD_TOKEN
            and (p not in self._ids or (allowed is not None and p not in allowed))
        }

    # --- persistence ----------------------------------------------------------------
    def _state(self, directory: Path) -> dict:
        if self.inventory is not None:
            self.inventory.save(directory / INVENTORY_FILE)
        return {
            "inventory_file": INVENTORY_FILE if self.inventory is not None else None,
            "word_boundary": self.word_boundary,
            "strip_stress": self.strip_stress,
            "strip_length": self.strip_length,
            "strip_tones": self.strip_tones,
            "tokens": self._tokens,
            "language_phones": {
                lang: sorted(ps, key=self._ids.__getitem__)
                for lang, ps in sorted(self.language_phones.items())
            },
        }

    @classmethod
    def _from_state(cls, directory: Path, state: dict) -> IpaTokenizer:
        tokens = state.get("tokens") or []
        wb = bool(state.get("word_boundary", True))
        head = [BLANK, UNK] + ([WORD_TOKEN] if wb else [])
        if tokens[: len(head)] != head:
            raise DataError(
                f"{directory}/tokenizer.json: an IPA tokenizer needs tokens starting with {head}"
            )
        return cls(
            tokens[len(head) :],
            word_boundary=wb,
            strip_stress=bool(state.get("strip_stress", False)),
            strip_length=bool(state.get("strip_length", False)),
            strip_tones=bool(state.get("strip_tones", False)),
            language_phones=state.get("language_phones") or {},
            inventory=PhoneInventory.load(directory / state["inventory_file"])
            if state.get("inventory_file")
            else None,
        )
