"""speechfm.decode.pseudo_label: confidence filtering (thresholds, min_tokens, top_fraction),
the pseudo-labelled CutSet, the round's stats against references, and an end-to-end run of
a tiny random transducer with language-keyed adapters over synthetic audio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speechfm.decode.ctc import CtcHypothesis
from speechfm.decode.pseudo_label import (
    PseudoLabel,
    _label,
    filter_pseudo_labels,
    pseudo_label,
    pseudo_label_cuts,
    pseudo_label_stats,
)
from speechfm.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
TEXTS = ["abc", "cab ba", "cc a"]


def _lab(cut_id, confidence, num_tokens=3, text="ab"):
    return PseudoLabel(cut_id, text, list(range(1, num_tokens + 1)), confidence,
                       confidence if num_tokens else 0.0, num_tokens)


def _ids(labels):
    return [lab.cut_id for lab in labels]


# ----------------------------------------------------------------------------- filtering


def test_filter_thresholds_and_min_tokens_keep_input_order():
    labels = [_lab("c", 0.9), _lab("a", 0.5), _lab("b", 0.7, num_tokens=1),
              _lab("e", 0.0, num_tokens=0, text="")]
    assert _ids(filter_pseudo_labels(labels)) == ["c", "a", "b"]  # empty dropped by default
    assert _ids(filter_pseudo_labels(labels, min_tokens=0)) == ["c", "a", "b", "e"]
    assert _ids(filter_pseudo_labels(labels, min_confidence=0.7)) == ["c", "b"]  # >= keeps 0.7
    assert _ids(filter_pseudo_labels(labels, min_confidence=0.7, min_tokens=2)) == ["c"]
    assert filter_pseudo_labels(labels, min_confidence=1.0) == []
    assert filter_pseudo_labels([], top_fraction=0.5) == []
    # tokens that decode to nothing (word separators only) make an empty label
    blank = _lab("s", 0.9, num_tokens=2, text=" ")
    assert filter_pseudo_labels([blank]) == [] and filter_pseudo_labels([blank], min_tokens=0)
    assert pseudo_label_stats([blank], [])["num_empty"] == 1


def test_top_fraction_rounds_up_and_breaks_ties_by_cut_id():
    labels = [_lab("d", 0.6), _lab("b", 0.8), _lab("c", 0.8), _lab("a", 0.4), _lab("x", 0.1)]
    # thresholds first (x dropped: 4 kept), then ceil(0.5 * 4) = 2 most confident
    kept = filter_pseudo_labels(labels, min_confidence=0.3, top_fraction=0.5)
    assert _ids(kept) == ["b", "c"]
    assert _ids(filter_pseudo_labels(labels, top_fraction=0.3)) == ["b", "c"]  # ceil(1.5)
    # a tie at the cut: the smaller cut id wins, whatever the input order
    one = filter_pseudo_labels(labels, top_fraction=0.2)
    assert _ids(one) == ["b"]
    for perm in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        shuffled = [labels[i] for i in perm]
        assert _ids(filter_pseudo_labels(shuffled, top_fraction=0.2)) == ["b"]
        assert sorted(_ids(filter_pseudo_labels(shuffled, top_fraction=0.6))) == ["b", "c", "d"]
    assert _ids(filter_pseudo_labels(labels, top_fraction=1.0)) == _ids(labels)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_confidence": -0.1}, "min_confidence"),
    ({"min_confidence": 1.5}, "min_confidence"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 1.5}, "min_tokens"),
    ({"top_fraction": 0.0}, "top_fraction"),
    ({"top_fraction": 1.2}, "top_fraction"),
])
def test_filter_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        filter_pseudo_labels([_lab("a", 0.5)], **kwargs)


def test_label_of_hypotheses_including_empty():
    tok = _tokenizer()
    ids = tok.encode("ab")
    lab = _label("u1", CtcHypothesis(tokens=ids, token_confidences=[0.9, 0.5]), tok)
    assert (lab.text, lab.tokens, lab.num_tokens) == ("ab", ids, 2)
    assert lab.confidence == pytest.approx(0.7) and lab.min_confidence == pytest.approx(0.5)
    empty = _label("u2", CtcHypothesis(tokens=[]), tok)
    assert (empty.text, empty.tokens, empty.confidence, empty.min_confidence,
            empty.num_tokens) == ("", [], 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="u3.*2 tokens but 1"):
        _label("u3", CtcHypothesis(tokens=ids, token_confidences=[0.9]), tok)


# ----------------------------------------------------------------------------- cuts


def _cuts(tmp_path, durations=(0.6, 1.0, 0.8), languages=("ky", "ky", "tt")):
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    rng = np.random.default_rng(0)
    cuts = []
    for i, (dur, lang) in enumerate(zip(durations, languages, strict=True)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(dur * SR))).astype(np.float32), SR)
        rec = Recording.from_file(path, recording_id=f"u{i}")
        sup = SupervisionSegment(id=f"u{i}", recording_id=rec.id, start=0.0,
                                 duration=rec.duration, channel=0, text=None,
                                 language=lang, speaker=f"s{i}", custom={"source": "pool"})
        cuts.append(MonoCut(id=f"u{i}", start=0.0, duration=rec.duration, channel=0,
                            recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def test_pseudo_label_cuts_fields_and_errors(tmp_path):
    from lhotse.utils import fastcopy

    cuts = _cuts(tmp_path)
    labels = [_lab("u2", 0.75, text="cab"), _lab("u0", 0.5, text="a b")]
    out = pseudo_label_cuts(cuts, labels)
    assert [c.id for c in out] == ["u2", "u0"]  # the labels' order
    for cut, lab in zip(out, labels, strict=True):
        (sup,) = cut.supervisions
        orig = cuts[cut.id].supervisions[0]
        assert sup.text == lab.text
        assert sup.custom == {"source": "pool", "pseudo_label": True, "confidence": lab.confidence}
        assert (sup.language, sup.speaker, sup.start, sup.duration) == (
            orig.language, orig.speaker, orig.start, orig.duration)
        assert cut.recording == cuts[cut.id].recording
    assert cuts["u2"].supervisions[0].text is None  # the input is untouched

    bare = fastcopy(cuts["u1"], supervisions=[])
    (made,) = pseudo_label_cuts([bare], [_lab("u1", 0.9, text="c")])
    (sup,) = made.supervisions
    assert (sup.text, sup.start, sup.duration, sup.custom["pseudo_label"]) == (
        "c", 0.0, bare.duration, True)

    with pytest.raises(DataError, match="nope"):
        pseudo_label_cuts(cuts, [_lab("u0", 0.5), _lab("nope", 0.5)])
    with pytest.raises(DataError, match="u0.*more than one"):
        pseudo_label_cuts(cuts, [_lab("u0", 0.5), _lab("u0", 0.6)])
    two = fastcopy(cuts["u1"], supervisions=cuts["u1"].supervisions * 2)
    with pytest.raises(DataError, match="u1.*2 supervisions"):
        pseudo_label_cuts([two], [_lab("u1", 0.5)])


# ----------------------------------------------------------------------------- stats


def test_stats_counts_and_error_rates_against_references():
    labels = [_lab("a", 0.9, text="the cat"), _lab("b", 0.3, text="a dog"),
              _lab("c", 0.6, text="sat"), _lab("e", 0.0, num_tokens=0, text="")]
    kept = filter_pseudo_labels(labels, min_confidence=0.5)
    assert _ids(kept) == ["a", "c"]
    stats = pseudo_label_stats(labels, kept)
    assert stats == {"num_labels": 4, "num_kept": 2, "num_empty": 1, "kept_fraction": 0.5,
                     "mean_confidence": pytest.approx(0.45),
                     "kept_mean_confidence": pytest.approx(0.75)}
    # references for a, b, e only (c has none and is not scored)
    refs = {"a": "The Cat", "b": "a big dog", "e": "x"}
    stats = pseudo_label_stats(labels, kept, refs, normalize=str.lower)
    assert stats["num_kept_scored"] == 1 and stats["num_scored"] == 3
    assert stats["cer"] == 0.0 and stats["wer"] == 0.0  # "the cat" == normalised "The Cat"
    # all: words 0 + 1 (big deleted) + 1 (x deleted) over 2 + 3 + 1; chars 0 + 3 + 1 over 6 + 7 + 1
    assert stats["all_wer"] == pytest.approx(2 / 6)
    assert stats["all_cer"] == pytest.approx(4 / 14)
    unnormalised = pseudo_label_stats(labels, kept, refs)
    assert unnormalised["wer"] == pytest.approx(1.0)  # "the cat" vs "The Cat": 2 subs

    none_scored = pseudo_label_stats(labels, kept, {"b": "a dog"})
    assert none_scored["num_kept_scored"] == 0 and math.isnan(none_scored["cer"])
    assert none_scored["all_wer"] == 0.0
    empty = pseudo_label_stats([], [])
    assert empty["num_labels"] == 0 and math.isnan(empty["kept_fraction"])
    with pytest.raises(ValueError, match="not among the labels"):
        pseudo_label_stats(labels[:1], [_lab("zz", 0.9)])


# ----------------------------------------------------------------------------- end to end


def _tokenizer():
    from speechfm.text.char import CharTokenizer

    return CharTokenizer.train(TEXTS)


def _teacher(tok):
    from speechfm.models.transducer import create_transducer_model, transducer_tiny

    config = transducer_tiny(tok.vocab_size)
    config.encoder.conformer.conv_causal = True
    config.encoder.specaugment = False
    config.adapters = [{"name": "lda", "kind": "bottleneck", "points": ["after_block"],
                        "options": {"bottleneck": 4}, "languages": ["ky", "tt"]}]
    torch.manual_seed(0)
    model = create_transducer_model(config)
    with torch.no_grad():  # non-trivial emissions, and adapters that change them
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_pseudo_label_end_to_end_with_language_adapters(tmp_path):
    from speechfm.features.fbank import compute_fbank

    tok = _tokenizer()
    model = _teacher(tok).train()
    cuts = _cuts(tmp_path)
    calls = []
    recognize = model.recognize

    def recording(feats, x_lens, **kwargs):
        calls.append(kwargs)
        assert not model.training and not torch.is_grad_enabled()
        return recognize(feats, x_lens, **kwargs)

    model.recognize = recording
    labels = {lang: pseudo_label(model, cuts, tok, language=lang, max_duration=1.5,
                                 search_kwargs={"max_sym_per_frame": 2})
              for lang in ("ky", "tt")}
    plain = pseudo_label(model, cuts, tok)
    assert model.training  # mode restored
    # several batches (1.5 s each); every call got the language and the search options
    assert len(calls) >= 6 and all(c["method"] == "greedy" and c["beam"] == 4 for c in calls)
    assert {c.get("language") for c in calls} == {"ky", "tt", None}
    assert all(c["max_sym_per_frame"] == 2 for c in calls if c.get("language"))
    assert "language" not in calls[-1]

    for result in (*labels.values(), plain):
        assert _ids(result) == [c.id for c in cuts]  # one per cut, in the cuts' order
        for lab in result:
            assert 0.0 <= lab.min_confidence <= lab.confidence <= 1.0
            assert lab.num_tokens == len(lab.tokens) and lab.text == tok.decode(lab.tokens)
    confs = {k: [lab.confidence for lab in v] for k, v in (*labels.items(), ("none", plain))}
    assert confs["ky"] != confs["tt"] and confs["ky"] != confs["none"]

    # each label is what the model gives the cut alone, with the same language
    model.recognize = recognize
    model.eval()
    for cut, lab in zip(cuts, labels["ky"], strict=True):
        feats = torch.from_numpy(compute_fbank(cut.load_audio(), SR, model.encoder.fbank.config))
        with torch.no_grad():
            (hyp,) = model.recognize(feats[None], torch.tensor([feats.shape[0]]),
                                     language="ky", max_sym_per_frame=2)
        assert lab.tokens == hyp.tokens
        assert lab.confidence == pytest.approx(float(np.mean(hyp.token_confidences))
                                               if hyp.tokens else 0.0, abs=1e-4)

    kept = filter_pseudo_labels(labels["ky"], min_tokens=0, top_fraction=0.5)
    assert len(kept) == 2
    student_cuts = pseudo_label_cuts(cuts, kept)
    assert [c.supervisions[0].language for c in student_cuts] == [
        cuts[lab.cut_id].supervisions[0].language for lab in kept]

    with pytest.raises(ValueError, match="method"):
        pseudo_label(model, cuts, tok, method="viterbi")
    with pytest.raises(ValueError, match="language"):
        pseudo_label(model, cuts, tok, search_kwargs={"language": "ky"})
    with pytest.raises(DataError, match="u0.*more than once"):
        pseudo_label(model, [cuts[0], cuts[0]], tok)
    assert pseudo_label(model, [], tok) == []


def test_unreadable_cuts_are_left_out(tmp_path, caplog):
    tok = _tokenizer()
    model = _teacher(tok).eval()
    cuts = _cuts(tmp_path)
    (tmp_path / "u1.wav").unlink()
    with caplog.at_level("WARNING", logger="speechfm"):
        labels = pseudo_label(model, cuts, tok, language="tt")
    assert _ids(labels) == ["u0", "u2"]
    assert any("could not be read" in r.getMessage() and "u1" in r.getMessage()
               for r in caplog.records)
