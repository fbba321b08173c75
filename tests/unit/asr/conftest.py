"""A tiny synthetic two-language corpus (tones per utterance) shared by the ASR tests."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = {"en": ["ab ba", "abba", "a b"], "fr": ["ba", "bab", "ab"]}


@pytest.fixture(scope="module")
def corpus_texts():
    """{language: transcripts} of the ``corpus`` fixture (utterance ids ``<lang>_<i>``)."""
    return TEXTS


@pytest.fixture(scope="module")
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
