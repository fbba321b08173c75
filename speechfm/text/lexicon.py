"""Pronunciation lexicons (word -> phones) from espeak-ng, for phoneme-based ASR.

A Whistle-style phoneme recogniser is trained on IPA phones and decoded to words
through a lexicon and a word LM. This module builds that lexicon per language with the
same espeak-ng G2P that wrote the training transcripts (``speechfm.text.ipa``), reads
and writes it in the model directory's ``lexicon.txt`` format (``word<TAB>phone phone
...``, one pronunciation per line; ``speechfm.models.io`` calls :func:`read_lexicon` /
:func:`write_lexicon`) and extends it at test time.

Decisions worth knowing:

* **Words** are the whitespace tokens of the training text after the project's
  transcript normalisation (``NormalizerConfig(lang=lang)``: lower-case, punctuation
  removed except word-internal ``'`` and ``-``), i.e. exactly the words of a corpus's
  Kaldi ``text``, which is written normalised (the normaliser is idempotent).
* **One G2P call per distinct word**, in isolation (one word per line of one batched
  ``phonemize`` call). When espeak reads one word as several IPA words (numbers:
  ``123`` -> ``one hundred and twenty three``; abbreviations: pl ``itp`` -> ``i tak dalej``)
  their phones are **joined** into one pronunciation: a lexicon entry is one word, and a
  decoder needs all the phones it is spoken with.
* **Isolated is not in context.** espeak applies cross-word rules when it reads a
  sentence (the utterance-level ``text_ipa``): unstressed function words (en ``to`` ->
  ``t ə``, ``a`` -> ``ɐ``, read as the letter name ``ˈeɪ`` alone), voicing assimilation
  (pl ``w`` -> ``f``/``v``, ``z`` -> ``s``; alone they are the letter names ``v ɨ``,
  ``z ɨ``), linking r (en ``ɔːɹ`` -> ``ɔː ɹ``), clitics joined into one word (en ``of
  the``). :func:`context_mismatches` measures this against transcripts and collects the
  in-context variants, which can be merged into the lexicon as extra pronunciations.
* **Cache**: ``cache_dir/<lang>.<key>.lexicon.txt`` (lexicon format) holds every word
  phonemized so far for one key (see :func:`cache_key`: espeak voice, strip options,
  language-switch handling, espeak-ng version, cache format); words espeak gives no
  phones for go to ``<lang>.<key>.nopron.txt``. A later call phonemizes only the words
  the cache lacks. Writes are atomic (temporary file + rename); two processes writing
  the same cache at once may lose each other's new words, never corrupt the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechfm.errors import DataError
from speechfm.text import ipa as _ipa
from speechfm.text.normalize import NormalizerConfig, normalize_text

LEXICON_FILE = "lexicon.txt"
"""File name of a lexicon in a model directory."""
CACHE_FORMAT = 1
"""Bump when the cached phones would change for the same espeak-ng (clean_ipa fixes)."""

_log = logging.getLogger(__name__)

Pronunciation = list[str]


def _check_entry(word: str, pron: Sequence[str]) -> list[str]:
    if not word or any(c in word for c in "\t\n\r") or word != word.strip():
        raise DataError(
            f"lexicon: invalid word {word!r} (empty, or with tabs/newlines/edge spaces)"
        )
    pron = [str(p) for p in pron]
    if not pron or any(not p or any(c.isspace() for c in p) for p in pron):
        raise DataError(f"lexicon: invalid pronunciation {pron!r} of {word!r}")
    return pron


class Lexicon(Mapping[str, list[Pronunciation]]):
    """Word -> pronunciations (lists of phones), ordered and without duplicates.

    A read-only ``Mapping`` (so ``save_part(dir, "lexicon", lex)`` takes it as is) with
    in-place ``add``/``update``/``extend``. ``lang`` and the strip options record how the
    phones were made (set by :func:`build_lexicon`; not saved in ``lexicon.txt``).
    """

    def __init__(
        self,
        entries: Mapping[str, Iterable[Sequence[str]]] | None = None,
        *,
        lang: str | None = None,
        strip_stress: bool = False,
        strip_length: bool = False,
        strip_tones: bool = False,
    ) -> None:
        self._prons: dict[str, list[Pronunciation]] = {}
        self.lang = lang
        self.strip_stress = strip_stress
        self.strip_length = strip_length
        self.strip_tones = strip_tones
        for word, prons in (entries or {}).items():
            for pron in prons:
                self.add(word, pron)

    # --- Mapping ---------------------------------------------------------------------
    def __getitem__(self, word: str) -> list[Pronunciation]:
        return self._prons[word]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prons)

    def __len__(self) -> int:
        return len(self._prons)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lexicon):
            return self._prons == other._prons
        return isinstance(other, Mapping) and self._prons == {
            w: [list(p) for p in ps] for w, ps in other.items()
        }

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        lang = f"{self.lang}: " if self.lang else ""
        return (
            f"Lexicon({lang}{len(self)} words, {self.num_pronunciations} pronunciations, "
            f"{len(self.phones())} phones)"
        )

    # --- contents --------------------------------------------------------------------
    @property
    def words(self) -> list[str]:
        """The words, in order."""
        return list(self._prons)

    @property
    def num_pronunciations(self) -> int:
        return sum(len(ps) for ps in self._prons.values())

    def phone_counts(self) -> Counter[str]:
        """How many times each phone occurs over all pronunciations."""
        c: Counter[str] = Counter()
        for prons in self._prons.values():
            for pron in prons:
                c.update(pron)
        return c

    def phones(self) -> list[str]:
        """Distinct phones, most frequent first (ties by name), as ``PhoneInventory.phones``."""
        c = self.phone_counts()
        return sorted(c, key=lambda p: (-c[p], p))

    def to_dict(self) -> dict[str, list[Pronunciation]]:
        """A plain copy: what ``speechfm.models.io`` loads for the ``lexicon`` part."""
        return {w: [list(p) for p in ps] for w, ps in self._prons.items()}

    def missing(self, words: Iterable[str]) -> list[str]:
        """The distinct ``words`` the lexicon lacks, in first-seen order."""
        return [w for w in dict.fromkeys(words) if w not in self._prons]

    # --- editing ---------------------------------------------------------------------
    def add(self, word: str, pron: Sequence[str]) -> bool:
        """Add one pronunciation; False when the word already has it."""
        pron = _check_entry(word, pron)
        prons = self._prons.setdefault(word, [])
        if pron in prons:
            return False
        prons.append(pron)
        return True

    def update(self, other: Mapping[str, Iterable[Sequence[str]]]) -> None:
        """Add every pronunciation of ``other`` (new ones after existing ones)."""
        for word, prons in other.items():
            for pron in prons:
                self.add(word, pron)

    def merged(self, other: Mapping[str, Iterable[Sequence[str]]]) -> Lexicon:
        """A new lexicon with the entries of both (this one's first)."""
        out = self.copy()
        out.update(other)
        return out

    def copy(self) -> Lexicon:
        return Lexicon(self._prons, **self._meta())

    def extend(
        self, words: Iterable[str], g2p: Callable[[list[str]], list[list[str]]]
    ) -> list[str]:
        """Add the words the lexicon lacks, pronounced by ``g2p`` (e.g. :func:`espeak_g2p`).

        For test-time vocabulary extension. Words the G2P gives no phones for are left
        out. Returns the words added.
        """
        todo = self.missing(words)
        if not todo:
            return []
        prons = g2p(todo)
        if len(prons) != len(todo):
            raise DataError(
                f"lexicon: g2p returned {len(prons)} pronunciations for {len(todo)} words"
            )
        added = []
        for word, pron in zip(todo, prons, strict=True):
            if pron:
                self.add(word, pron)
                added.append(word)
        return added

    def stripped(
        self, *, strip_stress: bool = False, strip_length: bool = False, strip_tones: bool = False
    ) -> Lexicon:
        """A copy with stress / length / tone marks removed from every phone.

        Whistle's lexicon clean-up. Phones left empty are dropped, and pronunciations
        that become equal are merged.
        """
        meta = self._meta()
        meta["strip_stress"] |= strip_stress
        meta["strip_length"] |= strip_length
        meta["strip_tones"] |= strip_tones
        out = Lexicon(**meta)
        for word, prons in self._prons.items():
            for pron in prons:
                phones = [
                    s
                    for s in (
                        _ipa._strip(
                            p,
                            strip_stress=strip_stress,
                            strip_length=strip_length,
                            strip_tones=strip_tones,
                        )
                        for p in pron
                    )
                    if s
                ]
                if phones:
                    out.add(word, phones)
        return out

    def _meta(self) -> dict:
        return {
            "lang": self.lang,
            "strip_stress": self.strip_stress,
            "strip_length": self.strip_length,
            "strip_tones": self.strip_tones,
        }

    # --- files -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        write_lexicon(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **meta) -> Lexicon:
        """Read a ``lexicon.txt``; ``meta`` sets ``lang`` and the strip options."""
        lex = read_lexicon(path)
        for k, v in meta.items():
            if k not in lex._meta():
                raise TypeError(f"Lexicon.load() got an unexpected keyword argument {k!r}")
            setattr(lex, k, v)
        return lex


def write_lexicon(lexicon: Mapping[str, Iterable[Sequence[str]]], path: str | os.PathLike) -> None:
    """Write ``word<TAB>phone phone ...`` lines, one per pronunciation, in the given order."""
    lines = []
    for word, prons in lexicon.items():
        for pron in prons:
            lines.append(f"{word}\t{' '.join(_check_entry(word, pron))}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_lexicon(path: str | os.PathLike) -> Lexicon:
    """Read a lexicon written by :func:`write_lexicon` (blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read lexicon ({e})") from e
    lex = Lexicon()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        word, sep, phones = line.partition("\t")
        if not sep or not phones.split() or not word:
            raise DataError(f"{path}:{n}: expected 'word<TAB>phone phone ...', got {line!r}")
        lex.add(word, phones.split())
    return lex


# --------------------------------------------------------------------------------------
# Building from text
# --------------------------------------------------------------------------------------


def _normalizer(normalize: bool | NormalizerConfig, lang: str | None) -> NormalizerConfig | None:
    if isinstance(normalize, NormalizerConfig):
        return normalize
    return NormalizerConfig(lang=lang) if normalize else None


def _tokens(text: str, norm: NormalizerConfig | None) -> list[str]:
    return (normalize_text(text, norm) if norm is not None else text).split()


def word_counts(
    texts: Iterable[str], lang: str | None = None, *, normalize: bool | NormalizerConfig = True
) -> Counter[str]:
    """Token counts of ``texts`` (utterances or words), tokenised as :func:`build_lexicon` does.

    ``normalize``: True for the corpora's normalisation (``NormalizerConfig(lang=lang)``),
    a ``NormalizerConfig`` for another, False to split the text as given.
    """
    if isinstance(texts, str):
        raise TypeError("word_counts() takes a list of texts, not a single string")
    norm = _normalizer(normalize, lang)
    c: Counter[str] = Counter()
    for t in texts:
        c.update(_tokens(t, norm))
    return c


def _g2p_words(
    words: Sequence[str],
    lang: str,
    *,
    strip_stress: bool,
    strip_length: bool,
    strip_tones: bool,
    njobs: int = 1,
    language_switch: str = "remove-flags",
) -> list[Pronunciation]:
    """Isolated-word G2P: one ``phonemize`` call, one word per line, IPA words joined."""
    if not words:
        return []
    bad = [w for w in words if not w or len(w.split()) != 1]
    if bad:
        raise DataError(f"lexicon: G2P takes single words, got {bad[:5]!r}")
    ipa = _ipa.phonemize(
        list(words),
        lang,
        strip_stress=strip_stress,
        strip_length=strip_length,
        strip_tones=strip_tones,
        njobs=njobs,
        language_switch=language_switch,
    )
    out = []
    split = 0
    for line in ipa:
        parts = _ipa.ipa_words(line)
        split += len(parts) > 1
        out.append([p for part in parts for p in part])
    if split:
        _log.debug(
            "lexicon (%s): %d of %d words read as several IPA words (joined)",
            lang,
            split,
            len(words),
        )
    return out


def espeak_g2p(
    lang: str,
    *,
    strip_stress: bool = False,
    strip_length: bool = False,
    strip_tones: bool = False,
    njobs: int = 1,
) -> Callable[[list[str]], list[list[str]]]:
    """A G2P for ``Lexicon.extend``: words -> one pronunciation each (``[]`` if none).

    Same isolated-word espeak-ng reading and joining as :func:`build_lexicon`.
    """
    _ipa.espeak_voice(lang)  # fail now, naming the language, not at first use
    return functools.partial(
        _g2p_words,
        lang=lang,
        strip_stress=strip_stress,
        strip_length=strip_length,
        strip_tones=strip_tones,
        njobs=njobs,
    )


@functools.cache
def espeak_version() -> str:
    """espeak-ng's version (``"1.52.0"``), or ``"unknown"`` when it cannot be read."""
    try:
        _ipa._setup_espeak()
        from phonemizer.backend import EspeakBackend

        return ".".join(map(str, EspeakBackend.version()))
    except Exception:  # noqa: BLE001 - a cache key must not need a working espeak
        return "unknown"


def cache_key(
    lang: str,
    *,
    strip_stress: bool = False,
    strip_length: bool = False,
    strip_tones: bool = False,
    language_switch: str = "remove-flags",
) -> str:
    """16 hex digits of SHA-256 over the espeak voice of ``lang``, the options, the
    espeak-ng version and :data:`CACHE_FORMAT`: what fixes a word's cached phones."""
    payload = {
        "format": CACHE_FORMAT,
        "voice": _ipa.espeak_voice(lang),
        "strip_stress": bool(strip_stress),
        "strip_length": bool(strip_length),
        "strip_tones": bool(strip_tones),
        "language_switch": language_switch,
        "espeak": espeak_version(),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_cache(lex_path: Path, nopron_path: Path) -> tuple[dict[str, Pronunciation], set[str]]:
    prons: dict[str, Pronunciation] = {}
    empty: set[str] = set()
    try:
        if lex_path.is_file():
            prons = {w: ps[0] for w, ps in read_lexicon(lex_path).items()}
        if nopron_path.is_file():
            empty = {w for w in nopron_path.read_text(encoding="utf-8").split("\n") if w}
    except (DataError, OSError, UnicodeDecodeError) as e:
        _log.warning("lexicon cache %s unreadable (%s); rebuilding it", lex_path, e)
        return {}, set()
    return prons, empty


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_lexicon(
    texts_or_words: Iterable[str],
    lang: str,
    *,
    strip_stress: bool = False,
    strip_length: bool = False,
    strip_tones: bool = False,
    normalize: bool | NormalizerConfig = True,
    cache_dir: str | os.PathLike | None = None,
    njobs: int = 1,
    language_switch: str = "remove-flags",
) -> Lexicon:
    """The espeak-ng lexicon of the words of ``texts_or_words``.

    Args:
        texts_or_words: utterances (a corpus's transcripts) or words; each item is
            normalised (see ``normalize``) and split on whitespace.
        lang: ISO 639 code or espeak-ng voice (as for ``phonemize``).
        strip_stress, strip_length, strip_tones: Whistle's clean-up (drop ˈˌ, ːˑ,
            tone marks), applied by ``clean_ipa``.
        normalize: True: the corpora's transcript normalisation for ``lang``;
            a ``NormalizerConfig``: that one; False: split the text as given.
        cache_dir: reuse and extend ``cache_dir/<lang>.<cache_key>.lexicon.txt``.
        njobs: phonemizer worker processes (worth it above a few thousand words).
        language_switch: as for ``phonemize``.

    Returns:
        A lexicon with one pronunciation per word, words sorted; words espeak gives no
        phones for are left out (logged).
    """
    if isinstance(texts_or_words, str):
        raise TypeError("build_lexicon() takes a list of texts or words, not a single string")
    words = sorted(word_counts(texts_or_words, lang, normalize=normalize))
    opts = {"strip_stress": strip_stress, "strip_length": strip_length, "strip_tones": strip_tones}
    cached: dict[str, Pronunciation] = {}
    empty: set[str] = set()
    lex_path = nopron_path = None
    if cache_dir is not None:
        key = cache_key(lang, language_switch=language_switch, **opts)
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        lex_path = cache / f"{lang}.{key}.lexicon.txt"
        nopron_path = cache / f"{lang}.{key}.nopron.txt"
        cached, empty = _read_cache(lex_path, nopron_path)
    todo = [w for w in words if w not in cached and w not in empty]
    if todo:
        prons = _g2p_words(todo, lang, njobs=njobs, language_switch=language_switch, **opts)
        for word, pron in zip(todo, prons, strict=True):
            if pron:
                cached[word] = pron
            else:
                empty.add(word)
        if lex_path is not None and nopron_path is not None:
            _write_atomic(
                lex_path, "".join(f"{w}\t{' '.join(cached[w])}\n" for w in sorted(cached))
            )
            if empty:
                _write_atomic(nopron_path, "".join(f"{w}\n" for w in sorted(empty)))
    _log.info(
        "lexicon (%s): %d words, %d phonemized now, %d from cache",
        lang,
        len(words),
        len(todo),
        len(words) - len(todo),
    )
    lex = Lexicon(lang=lang, **opts)
    unpronounced = []
    for w in words:
        if w in cached:
            lex.add(w, cached[w])
        else:
            unpronounced.append(w)
    if unpronounced:
        _log.warning(
            "lexicon (%s): espeak-ng gives no phones for %d words (left out), e.g. %s",
            lang,
            len(unpronounced),
            unpronounced[:5],
        )
    return lex


# --------------------------------------------------------------------------------------
# Isolated-word G2P vs the in-context transcripts
# --------------------------------------------------------------------------------------


@dataclass
class ContextComparison:
    """Lexicon pronunciations against in-context (utterance-level) IPA transcripts."""

    tokens: int = 0
    """Text words seen (utterances skipped included)."""
    compared: int = 0
    """Words aligned one-to-one with an IPA word and present in the lexicon."""
    mismatched: int = 0
    """Compared words whose in-context phones are none of the lexicon's pronunciations."""
    merged: int = 0
    """Words espeak joined with a neighbour or split differently in context (not compared)."""
    oov: int = 0
    """Words aligned one-to-one but absent from the lexicon."""
    skipped_utterances: int = 0
    """Utterances that could not be aligned word by word."""
    variants: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)
    """word -> counts of its in-context pronunciations that the lexicon lacks."""

    @property
    def rate(self) -> float:
        """``mismatched / compared`` (0 when nothing was compared)."""
        return self.mismatched / self.compared if self.compared else 0.0

    def to_lexicon(self, min_count: int = 1) -> Lexicon:
        """The in-context variants seen at least ``min_count`` times, most frequent first."""
        lex = Lexicon()
        for word in sorted(self.variants):
            for pron, n in self.variants[word].most_common():
                if n >= min_count:
                    lex.add(word, pron)
        return lex


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# (text words, IPA words) per alignment step: 1:1, clitics joined (n:1), numbers split (1:n)
_STEPS = ((1, 1), (2, 1), (3, 1), (4, 1)) + tuple((1, b) for b in range(2, 9))


def _align(
    ref: list[Pronunciation], hyp: list[Pronunciation]
) -> list[tuple[int, int, int, int]] | None:
    """Monotone segmentation of text words (``ref``: their lexicon phones) against IPA
    words (``hyp``) minimising phone edit distance; a 1:1 step is preferred at equal
    cost. Returns ``(i0, i1, j0, j1)`` segments, None when no segmentation exists."""
    n, m = len(ref), len(hyp)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i][j] == inf:
                continue
            for a, b in _STEPS:
                if i + a > n or j + b > m:
                    continue
                r = [p for w in ref[i : i + a] for p in w]
                h = [p for w in hyp[j : j + b] for p in w]
                c = cost[i][j] + _edit_distance(r, h) + 0.5 * (a + b - 2)
                if c < cost[i + a][j + b]:
                    cost[i + a][j + b] = c
                    back[i + a][j + b] = (a, b)
    if cost[n][m] == inf:
        return None
    segs = []
    i, j = n, m
    while i or j:
        a, b = back[i][j]  # type: ignore[misc]
        segs.append((i - a, i, j - b, j))
        i, j = i - a, j - b
    return segs[::-1]


def context_mismatches(
    lexicon: Lexicon | Mapping[str, Sequence[Sequence[str]]],
    texts: Sequence[str],
    ipa_transcripts: Sequence[str],
    *,
    lang: str | None = None,
    normalize: bool | NormalizerConfig = True,
) -> ContextComparison:
    """Compare the lexicon with the words of in-context IPA transcripts.

    ``texts[k]`` and ``ipa_transcripts[k]`` are one utterance (a corpus's ``text`` and
    ``text_ipa``). Text words are aligned with IPA words (espeak may join clitics or
    split numbers: those words are counted as ``merged``, not compared); each word
    aligned one-to-one is a mismatch when its in-context phones are none of its
    lexicon pronunciations. The lexicon's strip options are applied to the transcripts
    first, so a stress-free lexicon is compared without stress. ``lang`` defaults to
    the lexicon's (for normalisation).
    """
    if len(texts) != len(ipa_transcripts):
        raise DataError(f"{len(texts)} texts but {len(ipa_transcripts)} IPA transcripts")
    strip = {
        k: bool(getattr(lexicon, k, False)) for k in ("strip_stress", "strip_length", "strip_tones")
    }
    norm = _normalizer(normalize, lang or getattr(lexicon, "lang", None))
    unstressed = functools.partial(
        _ipa._strip, strip_stress=True, strip_length=False, strip_tones=False
    )
    out = ContextComparison()
    for text, ipa in zip(texts, ipa_transcripts, strict=True):
        words = _tokens(text, norm)
        out.tokens += len(words)
        hyp = [[s for s in (_ipa._strip(p, **strip) for p in w) if s] for w in _ipa.ipa_words(ipa)]
        prons = [[list(p) for p in lexicon.get(w, [])] for w in words]
        # align on stress-free phones: stress moves in context, segment boundaries don't
        ref_a = [[unstressed(p) for p in ps[0]] if ps else [] for ps in prons]
        hyp_a = [[unstressed(p) for p in w] for w in hyp]
        segs = _align(ref_a, hyp_a) if words and hyp else None
        if segs is None:
            out.skipped_utterances += bool(words or hyp)
            continue
        for i0, i1, j0, j1 in segs:
            if i1 - i0 != 1 or j1 - j0 != 1:
                out.merged += i1 - i0
                continue
            word, phones = words[i0], hyp[j0]
            if not prons[i0]:
                out.oov += 1
                continue
            out.compared += 1
            if phones not in prons[i0]:
                out.mismatched += 1
                out.variants.setdefault(word, Counter())[tuple(phones)] += 1
    return out


def compare_with_transcripts(
    lexicon: Lexicon | Mapping[str, Sequence[Sequence[str]]],
    texts: Sequence[str],
    ipa_transcripts: Sequence[str],
    **kwargs,
) -> float:
    """The in-context mismatch rate of :func:`context_mismatches` (same arguments)."""
    return context_mismatches(lexicon, texts, ipa_transcripts, **kwargs).rate
