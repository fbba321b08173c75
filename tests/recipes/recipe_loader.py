"""Import a recipe's train.py as a module (recipes are scripts, not a package).

A module of its own (not conftest.py, whose name several test folders share), importable
once tests/recipes is on sys.path, which its conftest.py ensures.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def import_recipe(name: str):
    """``recipes/<name>/train.py`` as a module (cached)."""
    key = f"_speechfm_recipe_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, REPO / "recipes" / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
