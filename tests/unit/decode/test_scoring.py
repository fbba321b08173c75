"""speechfm.decode.scoring: WER/CER/PER against hand counts, grouping, errs files, tables."""

from __future__ import annotations

import math
import random

import kaldialign
import pytest

from speechfm.decode import (
    ScoreResult,
    results_table_markdown,
    score,
    score_by_group,
    split_units,
    write_errs,
)
from speechfm.errors import DataError


def test_wer_hand_computed():
    refs = {"u1": "the cat sat down", "u2": "a dog"}
    hyps = {"u1": "the bat sat", "u2": "a big dog"}
    r = score(refs, hyps)
    # u1: cat->bat (sub), down deleted; u2: big inserted
    assert (r.subs, r.dels, r.ins, r.ref_len) == (1, 1, 1, 6)
    assert r.errors == 3 and r.rate == pytest.approx(0.5) and r.percent == pytest.approx(50.0)
    assert r.name == "WER" and r.num_utts == 2 and r.sentence_errors == 2
    u1 = r.utts[0]
    assert u1.alignment == [("the", "the"), ("cat", "bat"), ("sat", "sat"), ("down", None)]
    assert r.utts[1].alignment == [("a", "a"), (None, "big"), ("dog", "dog")]
    assert r.summary() == "WER 50.00% [ 3 / 6, 1 ins, 1 del, 1 sub ]"


def test_empty_references_and_hypotheses():
    r = score({"a": "", "b": "x y", "c": ""}, {"a": "", "b": "", "c": "z"})
    assert (r.ins, r.dels, r.subs, r.ref_len) == (1, 2, 0, 2)
    assert r.rate == pytest.approx(1.5)
    assert score({"a": ""}, {"a": ""}).rate == 0.0
    assert math.isinf(score({"a": ""}, {"a": "oops"}).rate)
    assert score({}, {}).rate == 0.0


def test_cer_excludes_spaces():
    r = score({"u": "ab cd"}, {"u": "abcd"}, unit="char")
    assert r.errors == 0 and r.ref_len == 4 and r.name == "CER"
    r = score({"u": "héllo wörld"}, {"u": "hello world!"}, unit="char")
    # é->e, ö->o substitutions, "!" inserted; 10 reference characters
    assert (r.subs, r.ins, r.dels, r.ref_len) == (2, 1, 0, 10)


def test_per_excludes_word_boundaries():
    ref = "h ə l ˈoʊ | w ˈɜː l d"
    hyp = "h ɛ l ˈoʊ w ˈɜː l d t"
    assert split_units(ref, "phone") == ["h", "ə", "l", "ˈoʊ", "w", "ˈɜː", "l", "d"]
    r = score({"u": ref}, {"u": hyp}, unit="phone")
    assert (r.subs, r.ins, r.dels, r.ref_len) == (1, 1, 0, 8) and r.name == "PER"
    with pytest.raises(ValueError, match="unit"):
        score({"u": ref}, {"u": hyp}, unit="syllable")


def test_counts_agree_with_kaldialign_edit_distance():
    rng = random.Random(0)
    refs, hyps = {}, {}
    for i in range(30):
        refs[f"u{i}"] = " ".join(rng.choice("abcde") for _ in range(rng.randint(0, 8)))
        hyps[f"u{i}"] = " ".join(rng.choice("abcdf") for _ in range(rng.randint(0, 8)))
    r = score(refs, hyps)
    expected = kaldialign.batch_error_rate(
        [s.split() for s in refs.values()], [s.split() for s in hyps.values()]
    )
    assert r.errors == expected["total"] and r.ref_len == expected["ref_len"]
    for u in r.utts:
        assert [a for a, _ in u.alignment if a is not None] == u.ref
        assert [b for _, b in u.alignment if b is not None] == u.hyp


def test_missing_and_extra_hypotheses():
    refs = {"u1": "a b", "u2": "c"}
    with pytest.raises(DataError, match="u2"):
        score(refs, {"u1": "a b"})
    r = score(refs, {"u1": "a b"}, allow_missing=True)
    assert r.dels == 1 and r.errors == 1
    with pytest.raises(DataError, match="no reference.*u9"):
        score(refs, {"u1": "a", "u2": "c", "u9": "x"})


def test_score_by_language():
    refs = {"en1": "hello world", "en2": "good day", "fr1": "bonjour le monde"}
    hyps = {"en1": "hello word", "en2": "good day", "fr1": "bonjour monde"}
    utt2lang = {"en1": "en", "en2": "en", "fr1": "fr"}
    groups = score_by_group(refs, hyps, utt2lang)
    assert list(groups) == ["en", "fr"]
    assert (groups["en"].errors, groups["en"].ref_len) == (1, 4)
    assert (groups["fr"].errors, groups["fr"].ref_len) == (1, 3)
    assert groups["fr"].dels == 1
    chars = score_by_group(refs, hyps, utt2lang, unit="char")
    assert chars["en"].ref_len == len("helloworldgoodday")
    with pytest.raises(DataError, match="no group.*fr1"):
        score_by_group(refs, hyps, {"en1": "en", "en2": "en"})


def test_write_errs_file(tmp_path):
    refs = {"utt-a": "a b c d", "utt-b": "x y"}
    hyps = {"utt-a": "a z c", "utt-b": "x y w"}
    r = score(refs, hyps)
    path = write_errs(tmp_path / "sub" / "errs-test.txt", r, title="test set, greedy")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "test set, greedy"
    assert lines[1] == "%WER = 50.00"
    assert lines[2] == (
        "Errors: 1 insertions, 1 deletions, 1 substitutions, over 6 reference words (4 correct)"
    )
    text = "\n".join(lines)
    assert "utt-a:\ta (b->z) c (d->*)" in lines
    assert "utt-b:\tx y (*->w)" in lines
    # the summary sections come after the per-utterance details
    details = text.index("PER-UTT DETAILS")
    for section, entry in [
        ("SUBSTITUTIONS:", "1   b -> z"),
        ("DELETIONS:", "1   d"),
        ("INSERTIONS:", "1   w"),
    ]:
        start = text.index(section)
        assert start > details
        assert text.index(entry, start) > start
    assert "a   1 0 1 1" in lines  # unit corr errs in_ref in_hyp
    assert "b   0 1 1 0" in lines


def test_results_table_markdown():
    r = score({"u": "a b c d"}, {"u": "a b c"})
    table = results_table_markdown(
        [
            {"model": "ctc_tiny", "decoding": "greedy", "test WER": r, "steps": 1000},
            {"model": "ctc|small", "decoding": "beam 4", "test WER": 12.3456},
        ]
    )
    assert table.splitlines() == [
        "| model | decoding | test WER | steps |",
        "|---|---|---|---|",
        "| ctc_tiny | greedy | 25.00 | 1000 |",
        "| ctc\\|small | beam 4 | 12.35 |  |",
    ]
    assert results_table_markdown([{"a": 1.0}], ["a"], float_digits=1) == (
        "| a |\n|---|\n| 1.0 |\n"
    )
    assert isinstance(r, ScoreResult)
