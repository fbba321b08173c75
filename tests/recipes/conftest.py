"""Fixtures of the recipe tests: import a recipe's train.py as a module; tiny corpora."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
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


TEXTS = {"en": ["ab ba", "abba", "a b"], "fr": ["ba", "bab", "ab"]}


@pytest.fixture(scope="session")
def corpus_texts():
    """{language: transcripts} of the ``corpus`` fixture (utterance ids ``<lang>_<i>``)."""
    return TEXTS


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    import soundfile as sf
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("asr_corpus")
    rng = np.random.default_rng(0)
    cuts = []
    for lang, texts in TEXTS.items():
        for i, text in enumerate(texts):
            utt = f"{lang}_{i}"
            t = np.arange(int(16000 * (0.6 + 0.1 * i))) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / f"{utt}.wav", audio.astype(np.float32), 16000)
            rec = Recording.from_file(root / f"{utt}.wav", recording_id=utt)
            cuts.append(make_cut(utt, rec, text=text, language=lang, speaker=f"spk{i}"))
    path = root / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    tok_dir = root / "lang_char"
    CharTokenizer.train([t for ts in TEXTS.values() for t in ts]).save(tok_dir)
    return root, path, tok_dir
