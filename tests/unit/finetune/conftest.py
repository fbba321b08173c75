"""Fixtures of the speechfm.finetune tests (helpers in finetune_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_helpers import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Twelve utterances by six speakers as a headerless TSV, a headed TSV and a Kaldi dir."""
    return make_corpus(tmp_path_factory.mktemp("ft_corpus"))
