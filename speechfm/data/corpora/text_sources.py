"""Text for the synthetic corpora: per-language prompts split into train/dev/test.

Two sources, both offline:

* **UDHR** (``../shared/data/udhr2/<iso3>.txt`` by default, or any directory with one
  ``<iso3>.txt`` or ``<lang>.txt`` file per language): paragraphs are split into
  sentences, sentences are assigned to train/dev/test, and only then chunked into
  prompts of 2-10 words, so that no sentence contributes to two splits.
* **wordfreq** (optional package): frequency-weighted word sequences built from the
  language's most common words. They are not grammatical, but they bring everyday
  vocabulary the legal UDHR text lacks ("the house", "tomorrow", "we want"). Languages
  wordfreq does not cover (ky, tt) get UDHR text only.

Prompts are normalised with the project's normaliser (``speechfm.text.normalize``) and
digits are rejected (espeak would read "1948" as words the transcript does not have).
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechfm.errors import DataError

SEEN_LANGS: tuple[str, ...] = ("en", "es", "fr", "it", "ky", "nl", "ru", "sv", "tr", "tt")
"""The ten training languages of CV-Lang10."""
UNSEEN_LANGS: tuple[str, ...] = ("pl", "id")
"""The two held-out languages used for cross-lingual fine-tuning."""
NEW_LANGS: tuple[str, ...] = ("uk", "kk")
"""Languages outside the default corpus that no mini_cv_lang model has seen, each with a
related seen language (uk: ru; kk: ky, tt): egs/new_language synthesises them."""

UDHR_FILES: dict[str, str] = {
    "en": "eng", "es": "spa", "fr": "fra", "it": "ita", "ky": "kir", "nl": "nld",
    "ru": "rus", "sv": "swe", "tr": "tur", "tt": "tat", "pl": "pol", "id": "ind",
    "de": "deu", "pt": "por", "uk": "ukr", "kk": "kaz",
}
"""ISO 639-1 code -> UDHR file stem (ISO 639-3)."""

_CYRILLIC = frozenset({"ru", "ky", "tt", "uk", "be", "bg", "kk"})

# Single-letter tokens that are real words (wordfreq also lists elision fragments such
# as French "l" and "d", which must not become words of their own).
_ONE_LETTER_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("ai"),
    "es": frozenset("aoyeu"),
    "fr": frozenset("aày"),
    "it": frozenset("aeèio"),
    "ru": frozenset("вискуоая"),
    "sv": frozenset("iåö"),
    "tr": frozenset("o"),
    "pl": frozenset("wizaou"),
    "uk": frozenset("івзуоайє"),
}

_VOWELS = frozenset("aeiouyæøœəıɛ" "аеёиоуыэюяөүәі")
_SENT_END = re.compile(r"(?<=[.!?;:])\s+")
# typographic apostrophes not covered by the project normaliser (ʼ stays: it is a letter)
_APOSTROPHES = str.maketrans({"`": "'", "´": "'"})
_DIGIT = re.compile(r"\d")


def default_text_dir() -> Path:
    """``../shared/data/udhr2`` beside the repository checkout."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "udhr2"


def text_file(text_dir: str | Path, lang: str) -> Path:
    """The text file for ``lang`` in ``text_dir``: ``<iso3>.txt`` or ``<lang>.txt``."""
    text_dir = Path(text_dir)
    names = [f"{UDHR_FILES[lang]}.txt"] if lang in UDHR_FILES else []
    names.append(f"{lang}.txt")
    for name in names:
        if (text_dir / name).is_file():
            return text_dir / name
    raise DataError(f"no text for language {lang!r} in {text_dir} (looked for {', '.join(names)})")


def normalize_text(text: str, lang: str) -> str:
    """The project's transcript normalisation (``speechfm.text.normalize``) for ``lang``.

    Lower-cased (Turkish dotted/dotless i handled), punctuation removed except
    apostrophes and hyphens inside words, one space between words; so that tokenizers,
    which apply the same normalisation, see prompts unchanged.
    """
    from speechfm.text.normalize import NormalizerConfig
    from speechfm.text.normalize import normalize_text as _normalize

    return _normalize(text.translate(_APOSTROPHES), NormalizerConfig(lang=lang))


def _is_heading(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    if not letters:
        return True
    if len(line.split()) < 4 and not line.rstrip().endswith((".", "!", "?")):
        return True  # "Preamble", "Article 1", "Artículo 12"
    # all-caps titles ("UNIVERSAL DECLARATION ...") in scripts with case
    cased = [c for c in letters if c.lower() != c.upper()]
    return bool(cased) and len(cased) > 10 and all(c.isupper() for c in cased)


def read_paragraphs(path: str | Path) -> list[str]:
    """Non-heading lines of a text file: titles, article numbers and blank lines dropped.

    The first non-empty line is the document title and is always dropped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read text file {path}: {e}") from e
    paras: list[str] = []
    seen_title = False
    for line in lines:
        line = " ".join(line.split())
        if not line:
            continue
        if not seen_title:
            seen_title = True
            continue
        if not _is_heading(line):
            paras.append(line)
    return paras


def split_sentences(paragraph: str) -> list[str]:
    """Split at ``. ! ? ; :`` followed by white space."""
    return [s.strip() for s in _SENT_END.split(paragraph) if s.strip()]


def chunk_words(words: Sequence[str], rng: random.Random, *, min_words: int = 2, max_words: int = 10) -> list[list[str]]:
    """Cut ``words`` into consecutive chunks of ``min_words``..``max_words`` words.

    Chunk lengths are drawn uniformly from ``[max(3, min_words), max_words]``; the last
    chunk is kept within bounds by shortening the one before it. A sequence shorter
    than ``min_words`` gives no chunk.
    """
    if not 1 <= min_words <= max_words or max_words < 2 * min_words - 1:
        raise ValueError(f"need 1 <= min_words and max_words >= 2*min_words-1, got {min_words}, {max_words}")
    out: list[list[str]] = []
    i, n = 0, len(words)
    while n - i > max_words:
        k = rng.randint(min(max(3, min_words), max_words), max_words)
        if n - i - k < min_words:
            k = n - i - min_words
        out.append(list(words[i : i + k]))
        i += k
    if n - i >= min_words:
        out.append(list(words[i:]))
    return out


@dataclass
class TextSplits:
    """Prompts of one language per split, each with the name of its source."""

    lang: str
    """ISO 639-1 code."""
    splits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """split name -> list of ``(normalised text, source)``; source is "udhr" or "wordfreq"."""

    def texts(self, split: str) -> list[str]:
        return [t for t, _ in self.splits.get(split, [])]


def _assign(n: int, fracs: dict[str, float], rng: random.Random) -> list[str]:
    """A split name for each of ``n`` items: shuffled, sizes proportional to ``fracs``."""
    order = list(range(n))
    rng.shuffle(order)
    names: list[str] = ["train"] * n
    start = 0
    for name, frac in fracs.items():
        if name == "train":
            continue
        k = max(1, round(n * frac)) if frac > 0 and n >= 3 else 0
        for j in order[start : start + k]:
            names[j] = name
        start += k
    return names


def udhr_prompts(
    lang: str,
    *,
    text_dir: str | Path | None = None,
    dev_frac: float = 0.1,
    test_frac: float = 0.1,
    seed: int = 0,
    min_words: int = 2,
    max_words: int = 10,
) -> dict[str, list[str]]:
    """UDHR prompts of ``lang`` per split (``train``/``dev``/``test``), text-disjoint.

    Sentences (not prompts) are assigned to splits, so prompts of one split never come
    from a sentence of another; prompts repeated across splits (UDHR repeats phrases
    such as "everyone has the right") are kept in train only, and dev prompts are
    removed from test. Chunks containing digits are dropped.
    """
    path = text_file(text_dir if text_dir is not None else default_text_dir(), lang)
    sentences = [s for p in read_paragraphs(path) for s in split_sentences(p)]
    if not sentences:
        raise DataError(f"text file {path} has no sentences for language {lang!r}")
    rng = random.Random(zlib.crc32(f"udhr/{lang}/{seed}".encode()))
    owner = _assign(len(sentences), {"train": 1.0, "dev": dev_frac, "test": test_frac}, rng)
    out: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for sent, split in zip(sentences, owner, strict=True):
        if _DIGIT.search(sent):
            # keep the sentence's digit-free clauses: cut at the numbers
            parts = _DIGIT.split(sent)
        else:
            parts = [sent]
        for part in parts:
            words = normalize_text(part, lang).split()
            for chunk in chunk_words(words, rng, min_words=min_words, max_words=max_words):
                out[split].append(" ".join(chunk))
    return _disjoint(out)


def _disjoint(out: dict[str, list[str]]) -> dict[str, list[str]]:
    seen: set[str] = set()
    result: dict[str, list[str]] = {}
    for split in ("train", "dev", "test"):
        kept = []
        for t in out.get(split, []):
            if t not in seen:
                seen.add(t)
                kept.append(t)
        result[split] = kept
    return result


def wordfreq_languages() -> frozenset[str]:
    """Languages the installed ``wordfreq`` package covers (empty if it is absent)."""
    try:
        import wordfreq
    except ImportError:
        return frozenset()
    return frozenset(wordfreq.available_languages())


def _in_script(word: str, lang: str) -> bool:
    script = "CYRILLIC" if lang in _CYRILLIC else "LATIN"
    for ch in word:
        if ch == "'" or unicodedata.combining(ch):
            continue
        if not ch.isalpha() or not unicodedata.name(ch, "").startswith(script):
            return False
    return True


def _has_vowel(word: str) -> bool:
    base = unicodedata.normalize("NFD", word)
    return any(c in _VOWELS for c in base)


@functools.lru_cache(maxsize=32)
def _wordfreq_vocab(lang: str, top_n: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    import wordfreq

    words, weights = [], []
    one_letter = _ONE_LETTER_WORDS.get(lang, frozenset())
    for w in wordfreq.top_n_list(lang, top_n):
        w = normalize_text(w, lang)
        if not w or " " in w or not _in_script(w, lang):
            continue
        if len(w) == 1:
            if w not in one_letter:
                continue
        elif not _has_vowel(w):
            continue  # abbreviations ("cm", "tv") that espeak expands or spells out
        # flatten Zipf so that sequences are not all "the of and": weight ~ freq^0.6
        words.append(w)
        weights.append(wordfreq.word_frequency(w, lang) ** 0.6)
    return tuple(words), tuple(weights)


def wordfreq_prompts(
    lang: str,
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    top_n: int = 3000,
    min_words: int = 3,
    max_words: int = 8,
) -> list[str]:
    """``n`` distinct word sequences built from ``lang``'s ``top_n`` most frequent words.

    Returns ``[]`` if wordfreq is not installed or does not cover ``lang`` (wordfreq
    silently substitutes a "nearest" language, e.g. Russian for Kyrgyz; that is refused
    here). ``split`` seeds the generator so that splits draw different sequences.
    """
    if n <= 0 or lang not in wordfreq_languages():
        return []
    words, weights = _wordfreq_vocab(lang, top_n)
    if len(words) < 50:
        return []
    rng = random.Random(zlib.crc32(f"wordfreq/{lang}/{split}/{seed}".encode()))
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        k = rng.randint(min_words, max_words)
        seq = rng.choices(words, weights=weights, k=k)
        if any(a == b for a, b in zip(seq, seq[1:], strict=False)):
            continue  # "the the" reads as a glitch
        text = " ".join(seq)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def load_text_splits(
    lang: str,
    counts: dict[str, int],
    *,
    text_dir: str | Path | None = None,
    dev_frac: float = 0.1,
    test_frac: float = 0.1,
    wordfreq_frac: float = 0.25,
    seed: int = 0,
) -> TextSplits:
    """Exactly ``counts[split]`` prompts per split for ``lang``, text-disjoint across splits.

    A share ``wordfreq_frac`` of each split (more when UDHR runs short) comes from
    wordfreq where available. When a split still has fewer distinct prompts than
    requested (ky, tt have no wordfreq list), prompts repeat: the corpus then speaks
    them with other voices, as several Common Voice speakers read the same sentence.
    """
    udhr = udhr_prompts(lang, text_dir=text_dir, dev_frac=dev_frac, test_frac=test_frac, seed=seed)
    rng = random.Random(zlib.crc32(f"mix/{lang}/{seed}".encode()))
    wf_avail = lang in wordfreq_languages()
    wanted_wf = {}
    for split, n in counts.items():
        wanted_wf[split] = 0
        if wf_avail and n > 0:
            wanted_wf[split] = min(n, max(round(n * wordfreq_frac), n - len(udhr.get(split, []))))
    wf_raw = {s: wordfreq_prompts(lang, k, seed=seed, split=s) for s, k in wanted_wf.items()}
    # no wordfreq prompt of dev/test may be in train (or an earlier split), nor any UDHR prompt
    taken = {t for ts in udhr.values() for t in ts}
    wf: dict[str, list[str]] = {}
    for split in ("train", "dev", "test"):
        kept = [t for t in wf_raw.get(split, []) if t not in taken]
        taken.update(kept)
        wf[split] = kept
    result = TextSplits(lang=lang)
    for split, n in counts.items():
        pool_u = list(udhr.get(split, []))
        rng.shuffle(pool_u)
        chosen: list[tuple[str, str]] = [(t, "wordfreq") for t in wf.get(split, [])[: wanted_wf[split]]]
        need = n - len(chosen)
        if need > 0 and not pool_u and not chosen:
            raise DataError(f"no {split} text for language {lang!r}: the text file is too short")
        pool = [(t, "udhr") for t in pool_u] or chosen[:]
        i = 0
        while need > 0:
            chosen.append(pool[i % len(pool)])
            i += 1
            need -= 1
        rng.shuffle(chosen)
        result.splits[split] = chosen
    return result


def ngram_overlap(test: Iterable[str], train: Iterable[str], n: int = 4) -> float:
    """Fraction of word ``n``-grams of ``test`` that also occur in ``train`` (0 if none)."""

    def grams(texts: Iterable[str]) -> list[tuple[str, ...]]:
        g = []
        for t in texts:
            w = t.split()
            g.extend(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
        return g

    train_set = set(grams(train))
    test_grams = grams(test)
    if not test_grams:
        return 0.0
    return sum(g in train_set for g in test_grams) / len(test_grams)
