"""Fixtures of the recipe tests: import a recipe's train.py as a module; tiny corpora."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from recipe_loader import import_recipe  # noqa: E402


@pytest.fixture(scope="session")
def recipe():
    """``recipe("ctc")`` -> the recipes/ctc/train.py module."""
    return import_recipe


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    """(cuts manifest, char tokenizer dir) of the tiny tone corpus (reference_corpus.py)."""
    from reference_corpus import make_tone_corpus

    return make_tone_corpus(tmp_path_factory.mktemp("tone_corpus"))


TEXTS = {"en": ["ab ba", "abba", "a b"], "fr": ["ba", "bab", "ab"]}


@pytest.fixture(scope="session")
def corpus_texts():
    """{language: transcripts} of the ``corpus`` fixture (utterance ids ``<lang>_<i>``)."""
    return TEXTS


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(root, cuts manifest, char tokenizer dir) of a 6-utterance tone corpus."""
    from reference_corpus import make_tone_corpus

    root = tmp_path_factory.mktemp("asr_corpus")
    cuts, tok = make_tone_corpus(root, TEXTS)
    return root, cuts, tok
