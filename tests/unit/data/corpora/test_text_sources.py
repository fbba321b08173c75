"""Prompt text for the synthetic corpus: 2-10 words, normalised, text-disjoint splits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechfm.data.corpora.text_sources import (
    NEW_LANGS,
    SEEN_LANGS,
    UNSEEN_LANGS,
    chunk_words,
    load_text_splits,
    ngram_overlap,
    normalize_text,
    read_paragraphs,
    text_file,
    udhr_prompts,
    wordfreq_languages,
)
from speechfm.errors import DataError

SAMPLE = """Universal Declaration of Human Rights
    Preamble
    Whereas recognition of the inherent dignity of all members of the human family is the foundation of freedom.
    Article 1
    All human beings are born free and equal in dignity and rights. They are endowed with reason and conscience.
    Article 2
    Everyone is entitled to all the rights and freedoms set forth in this Declaration, without distinction of any kind.
    Article 3
    Everyone has the right to life, liberty and security of person; nobody shall be held in slavery.
    Article 4
    No one shall be subjected to torture or to cruel treatment. The 10 December 1948 text was adopted in Paris.
    Article 5
    Everyone has the right to recognition everywhere as a person before the law: all are equal before it.
"""


@pytest.fixture
def text_dir(tmp_path):
    (tmp_path / "eng.txt").write_text(SAMPLE, encoding="utf-8")
    return tmp_path


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 80), seed=st.integers(0, 2**16))
def test_chunks_are_2_to_10_words_and_cover_the_sentence(n, seed):
    words = [f"w{i}" for i in range(n)]
    chunks = chunk_words(words, random.Random(seed))
    assert all(2 <= len(c) <= 10 for c in chunks)
    if n >= 2:
        assert [w for c in chunks for w in c] == words
    else:
        assert chunks == []


def test_headings_and_title_are_dropped(text_dir):
    paras = read_paragraphs(text_file(text_dir, "en"))
    assert len(paras) == 6
    assert not any(p.startswith(("Universal", "Preamble", "Article")) for p in paras)


def test_normalisation_is_the_project_one():
    assert normalize_text("Hello, World! It’s “fine”.", "en") == "hello world it's fine"
    assert normalize_text("İstanbul IŞIK", "tr") == "istanbul ışık"
    assert normalize_text("Co‐operation: (yes)", "en") == "co-operation yes"


def test_udhr_prompts_are_disjoint_and_digit_free(text_dir):
    splits = udhr_prompts("en", text_dir=text_dir, dev_frac=0.2, test_frac=0.2, seed=1)
    assert set(splits) == {"train", "dev", "test"}
    all_prompts = [t for ts in splits.values() for t in ts]
    assert all(2 <= len(t.split()) <= 10 for t in all_prompts)
    assert not any(c.isdigit() for t in all_prompts for c in t)
    assert all(t == normalize_text(t, "en") for t in all_prompts)
    train, dev, test = (set(splits[s]) for s in ("train", "dev", "test"))
    assert not (train & test) and not (train & dev) and not (dev & test)
    assert test and dev and train


def test_missing_language_file_names_the_folder(text_dir):
    with pytest.raises(DataError, match="no text for language 'xx'"):
        udhr_prompts("xx", text_dir=text_dir)


@pytest.mark.parametrize("lang", SEEN_LANGS + UNSEEN_LANGS + NEW_LANGS)
def test_every_corpus_language_has_disjoint_udhr_splits(shared_data, lang):
    splits = udhr_prompts(lang, text_dir=shared_data / "udhr2")
    assert len(splits["train"]) > 100 and len(splits["test"]) >= 10 and len(splits["dev"]) >= 10
    assert not set(splits["test"]) & set(splits["train"])
    # sentences (not prompts) are split: few test 4-grams are seen in training
    assert ngram_overlap(splits["test"], splits["train"]) < 0.3


@pytest.mark.parametrize("lang", ["en", "ky"])
def test_load_text_splits_gives_exact_counts_and_honest_sources(shared_data, lang):
    counts = {"train": 300, "dev": 40, "test": 40}
    ts = load_text_splits(lang, counts, text_dir=shared_data / "udhr2", seed=3)
    assert {s: len(v) for s, v in ts.splits.items()} == counts
    texts = {s: set(ts.texts(s)) for s in counts}
    assert not texts["test"] & texts["train"] and not texts["dev"] & texts["train"]
    assert not texts["dev"] & texts["test"]
    sources = {src for v in ts.splits.values() for _, src in v}
    # wordfreq text only where the package covers the language (never ru for ky)
    assert ("wordfreq" in sources) == (lang in wordfreq_languages())
    assert "udhr" in sources


def test_ngram_overlap():
    assert ngram_overlap(["a b c d e"], ["x a b c d y"]) == 0.5
    assert ngram_overlap(["a b"], ["a b c d"]) == 0.0


@pytest.mark.parametrize("lang", NEW_LANGS)
def test_new_languages_have_a_voice_a_g2p_and_cyrillic_text(shared_data, lang):
    from speechfm.data.corpora.tts import ESPEAK_VOICES
    from speechfm.text.ipa import phonemize

    ts = load_text_splits(lang, {"train": 50, "dev": 5, "test": 5}, text_dir=shared_data / "udhr2",
                          seed=0)
    texts = ts.texts("train")
    assert lang in ESPEAK_VOICES
    # Cyrillic script, no Latin letters leaking in from another language's text
    assert all(not any("a" <= ch <= "z" for ch in t) for t in texts)
    assert sum(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in texts) == len(texts)
    ipa = phonemize(texts[:3], lang)
    assert len(ipa) == 3 and all(p.strip() for p in ipa)
