"""Fixtures of the recipe tests: import a recipe's train.py as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def import_recipe(name: str):
    """``recipes/<name>/train.py`` as a module (recipes are scripts, not a package)."""
    key = f"_speechfm_recipe_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, REPO / "recipes" / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def recipe():
    """``recipe("ctc")`` -> the recipes/ctc/train.py module."""
    return import_recipe


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    """(cuts manifest, char tokenizer dir) of the tiny tone corpus (reference_corpus.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from reference_corpus import make_tone_corpus

    return make_tone_corpus(tmp_path_factory.mktemp("tone_corpus"))
