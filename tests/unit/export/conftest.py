"""Models for the export tests: random-weight tiny models (numerical parity), and the tone
"speech" models of tests/unit/test_api.py and test_api_stream.py trained here for a few
seconds (texts that mean something: each letter is a tone of its own)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, UNIT / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tone():
    """tests/unit/test_api_stream.py: ``synth``, ``TEXTS``, ``SR``, ``build_transducer_dir``
    (and through ``_api_test`` test_api.py's ``build_model_dir``)."""
    return _load("speechfm_test_export_tone", "test_api_stream.py")


@pytest.fixture(scope="session")
def trained_ctc_dir(tone, tmp_path_factory) -> Path:
    """A ctc_tiny (40 mel bins up to 3.8 kHz, global CMVN) that has learnt the tone texts."""
    return tone._api_test.build_model_dir(tmp_path_factory.mktemp("export_ctc"))


@pytest.fixture(scope="session")
def trained_transducer_dir(tone, tmp_path_factory) -> Path:
    """A streaming transducer_tiny (causal convolutions, dynamic chunks) that has learnt
    the tone texts."""
    return tone.build_transducer_dir(tmp_path_factory.mktemp("export_transducer"))
