"""evaluate_recognizer with per-language scores (``languages``) and search options
(``search_kwargs``), on a random tiny transducer and in-memory cuts in three languages."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from speechfm.decode.asr import evaluate_recognizer
from speechfm.decode.scoring import split_units

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR = 16000
KW = {"max_duration": 2.0, "loss_kwargs": {"step": 0}}  # 3 cuts a batch; the loss' step
TEXTS = {
    "en": ["a cab", "bad cab", "ace"],
    "ky": ["bed", "a dab"],
    "tt": ["cede", "be", "dace ab"],
}


def _cut(cid: str, lang: str, text: str, seed: int) -> MonoCut:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    seconds = 0.3 + 0.05 * len(text)
    samples = (0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, SR, format="WAV", subtype="PCM_16")
    rec = Recording.from_bytes(buf.getvalue(), recording_id=cid)
    sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=rec.duration,
                             text=text, language=lang, speaker=f"{lang}-spk")
    return MonoCut(id=cid, start=0.0, duration=rec.duration, channel=0, recording=rec,
                   supervisions=[sup])


@pytest.fixture(scope="module")
def setup():
    from speechfm.models.transducer import create_transducer_model
    from speechfm.models.transducer.config import transducer_tiny
    from speechfm.text.char import CharTokenizer

    texts = [t for ts in TEXTS.values() for t in ts]
    tok = CharTokenizer.train(texts)
    config = transducer_tiny(tok.vocab_size)
    config.encoder.specaugment = False
    torch.manual_seed(0)
    model = create_transducer_model(config).eval()
    with torch.no_grad():  # random, but emitting tokens: errors of all kinds
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    cuts = CutSet.from_cuts(_cut(f"{lang}-{i}", lang, t, seed=10 * k + i)
                            for k, (lang, ts) in enumerate(TEXTS.items()) for i, t in enumerate(ts))
    return model, tok, cuts


def _ref_len(tok, lang: str, unit: str) -> int:
    return sum(len(split_units(tok.normalize(t), unit)) for t in TEXTS[lang])


def test_without_new_arguments_the_result_is_unchanged(setup):
    model, tok, cuts = setup
    plain = evaluate_recognizer(model, cuts, tok, targets="text", **KW)
    assert set(plain) == {"loss", "count", "cer", "wer"}
    assert plain["count"] == sum(len(tok.encode(tok.normalize(t)))
                                 for ts in TEXTS.values() for t in ts)
    with_langs = evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                                     languages=["en", "ky"], search_kwargs={})
    assert {k: with_langs[k] for k in plain} == plain  # exactly equal, NaN-free
    assert not model.training


def test_per_language_errors_add_up_to_the_totals(setup):
    model, tok, cuts = setup
    out = evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                              languages=["en", "ky", "tt", "sv"])
    assert out["utts_en"] == 3 and out["utts_ky"] == 2 and out["utts_tt"] == 3
    # a listed language without cuts: 0 utterances, NaN rates
    assert out["utts_sv"] == 0 and math.isnan(out["cer_sv"]) and math.isnan(out["wer_sv"])
    for name, unit in (("cer", "char"), ("wer", "word")):
        lens = {lang: _ref_len(tok, lang, unit) for lang in TEXTS}
        errors = sum(out[f"{name}_{lang}"] * n for lang, n in lens.items())
        assert errors == pytest.approx(out[name] * sum(lens.values()), abs=1e-9)
        assert all(abs(out[f"{name}_{lang}"] * n - round(out[f"{name}_{lang}"] * n)) < 1e-9
                   for lang, n in lens.items())  # whole error counts
    assert out["cer"] > 0  # a random model: the check above is not 0 == 0
    # a language's rates do not depend on which other languages are listed
    alone = evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                                languages=["ky"])
    assert alone["cer_ky"] == out["cer_ky"] and alone["wer_ky"] == out["wer_ky"]
    assert "cer_en" not in alone


def test_search_kwargs_reach_recognize(setup, monkeypatch):
    model, tok, cuts = setup
    seen: list[dict] = []
    original = model.recognize

    def recording(feats, x_lens, **kwargs):
        seen.append(kwargs)
        return original(feats, x_lens)  # this model has no adapters to take "language"

    monkeypatch.setattr(model, "recognize", recording)
    evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                        search_kwargs={"language": "ky", "final_pass": False})
    assert seen and all(k == {"language": "ky", "final_pass": False} for k in seen)
    seen.clear()
    evaluate_recognizer(model, cuts, tok, targets="text", **KW)
    assert seen and all(k == {} for k in seen)  # greedy search, the model's default


def test_search_kwargs_change_the_search(setup):
    model, tok, cuts = setup
    greedy = evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                                 search_kwargs={"method": "greedy"})
    assert greedy == evaluate_recognizer(model, cuts, tok, targets="text", **KW)
    with pytest.raises(ValueError, match="method"):
        evaluate_recognizer(model, cuts, tok, targets="text", **KW,
                            search_kwargs={"method": "nope"})


def test_bad_languages_are_refused(setup):
    model, tok, cuts = setup
    with pytest.raises(ValueError, match="string"):
        evaluate_recognizer(model, cuts, tok, targets="text", languages="ky")
    with pytest.raises(ValueError, match="more than once"):
        evaluate_recognizer(model, cuts, tok, targets="text", languages=["ky", "ky"])
