"""Fixtures of the run-function tests: the toy family (toy_family.py) and its corpus."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy_family import TOY_FAMILY, make_corpus  # noqa: E402


@pytest.fixture
def toy_family():
    """The toy family registered for the test (and removed after it)."""
    from speechfm.models.io import FAMILIES, register_family

    register_family(TOY_FAMILY)
    yield TOY_FAMILY
    FAMILIES.pop(TOY_FAMILY.name, None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(cuts manifest, tokenizer) of the toy corpus."""
    return make_corpus(tmp_path_factory.mktemp("toy_corpus"))
