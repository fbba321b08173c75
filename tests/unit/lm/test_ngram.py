"""Modified Kneser-Ney estimation, ARPA I/O, G.fst compilation and ``speechfm lm train``."""

from __future__ import annotations

import math
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechfm.cli import main
from speechfm.errors import DataError
from speechfm.lm import (
    ARPA_LOG_ZERO,
    BOS,
    EOS,
    FALLBACK_DISCOUNTS,
    UNK,
    Discounts,
    NgramCounts,
    compile_arpa,
    count_of_counts,
    estimate_kneser_ney,
    kneser_ney_discounts,
    make_symbol_table,
    read_arpa,
    read_symbol_table,
    write_symbol_table,
)

TOY = [s.split() for s in ("a b", "a b c", "b c", "a c")]
"""Padded: <s> a b </s> / <s> a b c </s> / <s> b c </s> / <s> a c </s>."""


def _close(x: float, y: float, tol: float = 1e-6) -> bool:
    return abs(x - y) <= tol


# ---- (1) hand-computed toy corpus -------------------------------------------------------


def test_toy_continuation_counts_and_count_of_counts_by_hand():
    counts = NgramCounts.from_sentences(TOY, 3)
    uni, bi, tri = counts.adjusted()
    # Unigrams: distinct left neighbours. a: {<s>}; b: {a, <s>}; c: {b, a}; </s>: {b, c}.
    assert uni == {("a",): 1, ("b",): 2, ("c",): 2, (EOS,): 2}
    # Bigrams not starting with <s>: distinct left neighbours in the trigrams
    #   a b: {<s>}   a c: {<s>}   b </s>: {a}   b c: {a (a b c), <s> (<s> b c)}
    #   c </s>: {b (b c </s>), a (a c </s>)}
    # Bigrams starting with <s> keep raw counts: <s> a in 3 sentences, <s> b in 1.
    assert bi == {
        (BOS, "a"): 3, (BOS, "b"): 1, ("a", "b"): 1, ("a", "c"): 1,
        ("b", EOS): 1, ("b", "c"): 2, ("c", EOS): 2,
    }  # fmt: skip
    # Trigrams (top order): raw counts; <s> a b and b c </s> occur twice.
    assert tri == {
        (BOS, "a", "b"): 2, (BOS, "a", "c"): 1, (BOS, "b", "c"): 1, ("a", "b", EOS): 1,
        ("a", "b", "c"): 1, ("b", "c", EOS): 2, ("a", "c", EOS): 1,
    }  # fmt: skip
    # Count-of-counts (n1, n2, n3, n4):
    assert count_of_counts(uni) == (1, 3, 0, 0)  # a=1; b, c, </s> = 2
    assert count_of_counts(bi) == (4, 2, 1, 0)  # four 1s, two 2s, <s> a = 3
    assert count_of_counts(tri) == (5, 2, 0, 0)
    # n3 or n4 is 0 at every order: no valid discounts anywhere.
    assert all(kneser_ney_discounts(count_of_counts(a)) is None for a in (uni, bi, tri))


def _toy_expected(D):
    """Every probability and backoff of the toy trigram LM, by hand (linear, not log)."""
    (u1, u2, u3), (b1, b2, b3), (t1, t2, t3) = D  # unigram / bigram / trigram discounts
    # -- Unigrams. Continuation counts a=1, b=2, c=2, </s>=2, <unk>=0 (S = 7); D3+ unused.
    S1 = 1 + 2 + 2 + 2
    g1 = (u1 + u2 + u2 + u2) / S1  # discount mass: a's D1 and the three D2s
    W = 5  # predicted vocabulary: a b c </s> <unk>  (<s> excluded)
    p1 = {
        "a": (1 - u1) / S1 + g1 / W,
        "b": (2 - u2) / S1 + g1 / W,
        "c": (2 - u2) / S1 + g1 / W,
        EOS: (2 - u2) / S1 + g1 / W,
        UNK: (0 - 0) / S1 + g1 / W,  # <unk>: only the uniform share
    }
    # -- Bigrams. Adjusted counts <s> a=3, <s> b=1, a b=1, a c=1, b </s>=1, b c=2, c </s>=2.
    g2 = {
        BOS: (b3 + b1) / (3 + 1),  # <s> a (count 3 -> D3+), <s> b (count 1 -> D1)
        "a": (b1 + b1) / (1 + 1),  # a b, a c
        "b": (b1 + b2) / (1 + 2),  # b </s> (1), b c (2)
        "c": b2 / 2,  # c </s> (2)
    }
    p2 = {
        (BOS, "a"): (3 - b3) / 4 + g2[BOS] * p1["a"],
        (BOS, "b"): (1 - b1) / 4 + g2[BOS] * p1["b"],
        ("a", "b"): (1 - b1) / 2 + g2["a"] * p1["b"],
        ("a", "c"): (1 - b1) / 2 + g2["a"] * p1["c"],
        ("b", EOS): (1 - b1) / 3 + g2["b"] * p1[EOS],
        ("b", "c"): (2 - b2) / 3 + g2["b"] * p1["c"],
        ("c", EOS): (2 - b2) / 2 + g2["c"] * p1[EOS],
    }
    # -- Trigrams. Raw counts <s> a b=2, <s> a c=1, <s> b c=1, a b </s>=1, a b c=1,
    #    b c </s>=2, a c </s>=1.
    g3 = {
        (BOS, "a"): (t2 + t1) / (2 + 1),
        (BOS, "b"): t1 / 1,
        ("a", "b"): (t1 + t1) / (1 + 1),
        ("b", "c"): t2 / 2,
        ("a", "c"): t1 / 1,
    }
    p3 = {
        (BOS, "a", "b"): (2 - t2) / 3 + g3[(BOS, "a")] * p2[("a", "b")],
        (BOS, "a", "c"): (1 - t1) / 3 + g3[(BOS, "a")] * p2[("a", "c")],
        (BOS, "b", "c"): (1 - t1) / 1 + g3[(BOS, "b")] * p2[("b", "c")],
        ("a", "b", EOS): (1 - t1) / 2 + g3[("a", "b")] * p2[("b", EOS)],
        ("a", "b", "c"): (1 - t1) / 2 + g3[("a", "b")] * p2[("b", "c")],
        ("b", "c", EOS): (2 - t2) / 2 + g3[("b", "c")] * p2[("c", EOS)],
        ("a", "c", EOS): (1 - t1) / 1 + g3[("a", "c")] * p2[("c", EOS)],
    }
    return p1, g1, p2, g2, p3, g3


EXPLICIT = [(0.3, 0.8, 1.2), (0.4, 1.1, 1.7), (0.6, 0.9, 2.1)]


@pytest.mark.parametrize("given_discounts", [None, EXPLICIT], ids=["fallback", "explicit"])
def test_toy_trigram_probabilities_and_backoffs_by_hand(given_discounts):
    lm = estimate_kneser_ney(TOY, 3, discounts=given_discounts)
    D = EXPLICIT if given_discounts else [FALLBACK_DISCOUNTS] * 3
    assert [d.as_tuple() for d in lm.discounts] == [tuple(d) for d in D]
    assert all(d.fallback for d in lm.discounts) == (given_discounts is None)
    p1, g1, p2, g2, p3, g3 = _toy_expected(D)
    assert sum(p1.values()) == pytest.approx(1.0)
    assert lm.num_ngrams == [6, 7, 7]  # <unk> <s> </s> a b c; 7 bigrams; 7 trigrams

    log = math.log10
    for w, p in p1.items():
        assert _close(lm.logprob(w), log(p)), w
    for g, p in p2.items():
        assert _close(lm.logprob(g[1], g[:1]), log(p)), g
    for g, p in p3.items():
        assert _close(lm.logprob(g[2], g[:2]), log(p)), g
    # Backoff weights are the gammas: unigram contexts <s> a b c, bigram contexts.
    bows = {g: b for k in (1, 2) for g, _, b in lm.ngrams(k) if b is not None}
    expected = {(h,): g for h, g in g2.items()} | g3
    assert set(bows) == set(expected)
    for h, g in expected.items():
        assert _close(bows[h], log(g)), h
    assert lm.logprob(BOS) == ARPA_LOG_ZERO
    # Unseen events back off: p(a | b c) = gamma(b c) gamma(c) p1(a).
    assert _close(lm.logprob("a", ["b", "c"]), log(g3[("b", "c")] * g2["c"] * p1["a"]))
    # p(<unk> | <s> a) = gamma(<s> a) gamma(a) p1(<unk>); "zzz" is scored as <unk>.
    want = log(g3[(BOS, "a")] * g2["a"] * p1[UNK])
    assert _close(lm.logprob(UNK, [BOS, "a"]), want)
    assert _close(lm.logprob("zzz", [BOS, "a"]), want)
    # Context "c c" unseen (no backoff), "c a" unseen: gamma(c) p1(a).
    assert _close(lm.logprob("a", ["c", "c"]), log(g2["c"] * p1["a"]))
    # A whole sentence: p(a|<s>) p(b|<s> a) p(</s>|a b).
    want = log(p2[(BOS, "a")] * p3[(BOS, "a", "b")] * p3[("a", "b", EOS)])
    assert _close(lm.sentence_logprob(["a", "b"]), want)


def test_discounts_from_count_of_counts_by_hand():
    # n = (4, 2, 1, 1): Y = 4 / (4 + 2*2) = 0.5
    #   D1  = 1 - 2 * 0.5 * 2/4 = 0.5
    #   D2  = 2 - 3 * 0.5 * 1/2 = 1.25
    #   D3+ = 3 - 4 * 0.5 * 1/1 = 1.0
    d = kneser_ney_discounts((4, 2, 1, 1))
    assert d is not None and not d.fallback
    assert d.as_tuple() == pytest.approx((0.5, 1.25, 1.0))
    assert d(0) == 0 and d(1) == 0.5 and d(2) == 1.25 and d(3) == d(17) == 1.0
    assert kneser_ney_discounts((1, 3, 0, 0)) is None  # n3 = 0: D2, D3+ undefined
    assert kneser_ney_discounts((4, 2, 1, 0)) is None  # n4 = 0: D3+ = 3 (lmplz accepts)
    # n = (1, 10, 1, 100): Y = 1/21, D3+ = 3 - 4/21 * 100 < 0 -> invalid.
    assert kneser_ney_discounts((1, 10, 1, 100)) is None


def test_unigram_lm_with_estimated_discounts_by_hand():
    # Raw counts (order 1 = top order): x 3, y 2, z 2, p q r s 1, </s> 4 (four sentences)
    # -> n = (4, 2, 1, 1) -> D = (0.5, 1.25, 1.0) as above.
    lm = estimate_kneser_ney([s.split() for s in ("x y p", "x z q", "x y r", "z s")], 1)
    assert not lm.discounts[0].fallback
    assert lm.discounts[0].as_tuple() == pytest.approx((0.5, 1.25, 1.0))
    S = 3 + 2 + 2 + 4 * 1 + 4  # 15 tokens including </s>
    gamma = (4 * 0.5 + 2 * 1.25 + 1.0 + 1.0) / S  # p q r s; y z; x (3); </s> (4)
    W = 9  # x y z p q r s </s> <unk>
    assert _close(lm.logprob("x"), math.log10((3 - 1.0) / S + gamma / W))
    assert _close(lm.logprob("y", ["x"]), math.log10((2 - 1.25) / S + gamma / W))
    assert _close(lm.logprob("p"), math.log10((1 - 0.5) / S + gamma / W))
    assert _close(lm.logprob(EOS), math.log10((4 - 1.0) / S + gamma / W))
    assert _close(lm.logprob(UNK), math.log10(gamma / W))


# ---- (2) every distribution sums to 1 --------------------------------------------------


def _assert_normalised(lm, extra_contexts=()):
    words = [w for w in lm.vocab if w != BOS]
    contexts = {()} | set(extra_contexts)
    for k in range(1, lm.order):
        contexts |= {g for g, _, _ in lm.ngrams(k)}
    for k in range(1, lm.order + 1):
        for _, p, b in lm.ngrams(k):
            assert math.isfinite(p) and p <= 0.0
            assert b is None or math.isfinite(b)
    for h in contexts:
        total = math.fsum(10.0 ** lm.logprob(w, h) for w in words)
        assert abs(total - 1.0) < 1e-9, (h, total)


sentences_st = st.lists(
    st.lists(st.sampled_from("abcde"), min_size=0, max_size=7), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(
    sentences=sentences_st, order=st.integers(1, 3), prune=st.booleans(), seed=st.integers(0, 99)
)
def test_every_context_sums_to_one(sentences, order, prune, seed):
    lm = estimate_kneser_ney(sentences, order, min_count=2 if prune else 1)
    rng = random.Random(seed)
    unseen = [tuple(rng.choice("abcde") for _ in range(order - 1)) for _ in range(3)]
    _assert_normalised(lm, unseen)


def test_pruning_keeps_prefixes_and_still_sums_to_one():
    rng = random.Random(0)
    sents = [[rng.choice("abcdefghijklmn") for _ in range(rng.randint(1, 9))] for _ in range(100)]
    full = estimate_kneser_ney(sents, 3)
    pruned = estimate_kneser_ney(sents, 3, min_count=[1, 2, 3])
    assert pruned.num_ngrams[0] == full.num_ngrams[0]
    assert pruned.num_ngrams[1] < full.num_ngrams[1] and pruned.num_ngrams[2] < full.num_ngrams[2]
    bigrams = {g for g, _, _ in pruned.ngrams(2)}
    for g, p, _ in pruned.ngrams(3):
        assert g[:2] in bigrams and g[1:] in bigrams  # ARPA needs prefix and suffix
        assert p == full.logprob(g[2], g[:2])  # kept probabilities are unchanged
    _assert_normalised(pruned)


def test_closed_vocab_counts_oov_as_unk():
    lm = estimate_kneser_ney([["a", "b", "zz"], ["a", "q"]], 2, vocab=["a", "b", "never"])
    assert set(lm.vocab) == {UNK, BOS, EOS, "a", "b", "never"}
    assert lm.logprob(UNK, ["b"]) > lm.logprob("never", ["b"])  # <unk> was seen after b
    _assert_normalised(lm)


def test_bad_input_is_rejected():
    with pytest.raises(DataError, match="<s>"):
        estimate_kneser_ney([["a", BOS, "b"]], 2)
    with pytest.raises(TypeError):
        estimate_kneser_ney(["a b"], 2)
    with pytest.raises(DataError, match="whitespace"):
        estimate_kneser_ney([["a b", "c"]], 2)
    with pytest.raises(DataError, match="no sentences"):
        estimate_kneser_ney([], 2)
    with pytest.raises(ValueError, match="discounts"):
        estimate_kneser_ney(TOY, 2, discounts=[(0.5, 1.0, 1.5), (1.2, 1.0, 1.5)])
    with pytest.raises(ValueError, match="min_count"):
        estimate_kneser_ney(TOY, 2, min_count=[2, 2])
    assert Discounts(0.5, 1.0, 1.5).is_valid() and not Discounts(0.5, 2.5, 1.5).is_valid()


# ---- (3) ARPA round trip -----------------------------------------------------------------


def _random_corpus(seed: int, n: int = 150) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice("abcdefg") for _ in range(rng.randint(0, 8))] for _ in range(n)]


@pytest.mark.parametrize("suffix", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip_is_identical(tmp_path, suffix):
    lm = estimate_kneser_ney(_random_corpus(1), 3)
    path = tmp_path / suffix
    lm.write_arpa(path)
    back = read_arpa(path)
    assert back.order == 3 and back.num_ngrams == lm.num_ngrams and back.vocab == lm.vocab
    for k in (1, 2, 3):
        assert list(back.ngrams(k)) == list(lm.ngrams(k))
    rng = random.Random(2)
    for _ in range(300):
        ctx = [rng.choice([*"abcdefgx", BOS]) for _ in range(rng.randint(0, 3))]
        w = rng.choice([*"abcdefgx", EOS])
        assert back.logprob(w, ctx) == lm.logprob(w, ctx)
    text = path.read_bytes() if suffix.endswith(".arpa") else None
    if text is not None:
        assert text.startswith(b"\\data\\\nngram 1=") and text.rstrip().endswith(b"\\end\\")
        assert re.search(rb"\n-99\.0\t<s>\t", text)
    # Fixed precision: 7 significant digits, as KenLM writes.
    lm.write_arpa(tmp_path / "p7.arpa", precision=7)
    p7 = read_arpa(tmp_path / "p7.arpa")
    assert all(
        _close(p7.sentence_logprob(s), lm.sentence_logprob(s)) for s in _random_corpus(3, 20)
    )


def test_read_arpa_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError, match="not an ARPA"):
        read_arpa(bad)
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n\n\\end\\\n", encoding="utf-8")
    with pytest.raises(DataError, match="ngram 1=2"):
        read_arpa(bad)


# ---- (4) G.fst with kaldilm --------------------------------------------------------------


def _parse_text_fst(text: str):
    arcs, finals = [], {}
    for line in text.strip().splitlines():
        f = line.split()
        if len(f) >= 4:
            arcs.append(
                (int(f[0]), int(f[1]), int(f[2]), int(f[3]), float(f[4]) if len(f) > 4 else 0.0)
            )
        else:
            finals[int(f[0])] = float(f[1]) if len(f) > 1 else 0.0
    start = int(text.split()[0])  # OpenFst prints the start state first
    return start, arcs, finals


def test_symbol_table_layout(tmp_path):
    table = make_symbol_table(["b", "a", EOS, UNK, BOS, "c"])
    assert list(table.items()) == [
        ("<eps>", 0), (UNK, 1), ("a", 2), ("b", 3), ("c", 4), ("#0", 5), (BOS, 6), (EOS, 7),
    ]  # fmt: skip
    write_symbol_table(table, tmp_path / "words.txt")
    assert (tmp_path / "words.txt").read_text().splitlines()[:2] == ["<eps> 0", "<unk> 1"]
    assert read_symbol_table(tmp_path / "words.txt") == table
    with pytest.raises(DataError, match="disambiguation"):
        make_symbol_table(["a", "#1"])


def test_kaldilm_g_fst_has_the_expected_arcs(tmp_path):
    import kaldifst

    lm = estimate_kneser_ney([s.split() for s in ("a b", "b a b", "a")], 2)
    arpa = tmp_path / "lm.arpa"
    lm.write_arpa(arpa)
    table = lm.symbol_table()
    text = compile_arpa(arpa, table, tmp_path / "G.fst", text_fst_path=tmp_path / "G.fst.txt")
    assert (tmp_path / "G.fst.txt").read_text() == text
    start, arcs, finals = _parse_text_fst(text)
    ids = {s: i for s, i in table.items()}
    disambig = ids["#0"]
    for _, _, ilabel, olabel, _ in arcs:  # <s>, </s> never labels; #0 only in, with eps out
        assert ilabel not in (ids[BOS], ids[EOS]) and olabel not in (ids[BOS], ids[EOS], disambig)
        assert (ilabel == disambig) == (olabel == 0)
    cost = lambda logp: -logp * math.log(10)  # noqa: E731

    (null,) = [d for s, d, i, _, _ in arcs if s == start and i == disambig]
    state = {BOS: start}
    for s, d, i, _, _ in arcs:
        if s == null and i != disambig:
            state[next(w for w, j in ids.items() if j == i)] = d
    assert set(state) == {BOS, UNK, "a", "b"}  # every unigram but </s> has a history state
    expected = []
    for w in (UNK, "a", "b"):  # unigram arcs leave the backoff (null) state
        expected.append((null, state[w], ids[w], ids[w], cost(lm.logprob(w))))
    for (h, w), _, _ in lm.ngrams(2):
        if w != EOS:
            expected.append((state[h], state[w], ids[w], ids[w], cost(lm.logprob(w, [h]))))
    bows = {g[0]: b for g, _, b in lm.ngrams(1)}
    for h in (BOS, UNK, "a", "b"):  # backoff arcs #0:<eps>, weight -ln bow (0 if none)
        expected.append((state[h], null, disambig, 0, cost(bows.get(h) or 0.0)))
    key = lambda a: a[:4]  # noqa: E731
    assert sorted(map(key, arcs)) == sorted(map(key, expected))
    got = {key(a): a[4] for a in arcs}
    for a in expected:
        assert got[key(a)] == pytest.approx(a[4], abs=1e-4), a
    # </s> becomes final weights: p(</s>) at the null state, p(</s> | h) where seen.
    want_finals = {null: cost(lm.logprob(EOS))}
    want_finals |= {state[g[0]]: cost(p) for g, p, _ in lm.ngrams(2) if g[1] == EOS}
    assert finals.keys() == want_finals.keys()
    for s, c in want_finals.items():
        assert finals[s] == pytest.approx(c, abs=1e-4)
    fst = kaldifst.StdVectorFst.read(str(tmp_path / "G.fst"))
    assert fst.start == start and fst.num_states == len(state) + 1


def test_compile_arpa_refuses_incomplete_symbol_table(tmp_path):
    lm = estimate_kneser_ney(TOY, 2)
    lm.write_arpa(tmp_path / "lm.arpa")
    table = make_symbol_table(["a", "b", UNK])  # no "c"
    with pytest.raises(DataError, match="'c'"):
        compile_arpa(tmp_path / "lm.arpa", table, tmp_path / "G.fst")


# ---- (5) optional cross-check against KenLM's query code ---------------------------------


def test_kenlm_scores_our_arpa_identically(tmp_path):
    kenlm = pytest.importorskip("kenlm")  # extra check only: pip kenlm queries, never builds
    lm = estimate_kneser_ney(_random_corpus(4), 3)
    lm.write_arpa(tmp_path / "lm.arpa")
    model = kenlm.Model(str(tmp_path / "lm.arpa"))
    for s in _random_corpus(5, 30):
        assert model.score(" ".join(s), bos=True, eos=True) == pytest.approx(
            lm.sentence_logprob(s), abs=1e-4
        )


# ---- (6) perplexity ---------------------------------------------------------------------


def _grammar(rng: random.Random) -> list[str]:
    det = rng.choice(["the", "a", "this"])
    noun = rng.choice(["cat", "dog", "bird", "child", "farmer"])
    verb = rng.choice(["sees", "likes", "chases", "feeds"])
    obj = rng.choice(["the ball", "a bone", "the garden", "some seeds", "the old house"])
    tail = rng.choice(["", " today", " in the morning", " again"])
    return f"{det} {noun} {verb} {obj}{tail}".split()


@pytest.mark.parametrize("unit", ["word", "char"])
def test_perplexity_is_finite_and_lower_in_domain(unit):
    rng = random.Random(0)
    train = [_grammar(rng) for _ in range(300)]
    held_out = [_grammar(rng) for _ in range(50)]
    shuffled = [rng.sample(s, len(s)) for s in held_out]
    if unit == "char":  # a lexicon-free LM over characters, ▁ between words
        to_chars = lambda ws: list("▁".join(ws))  # noqa: E731
        train, held_out, shuffled = (list(map(to_chars, x)) for x in (train, held_out, shuffled))
    lm = estimate_kneser_ney(train, 3)
    ppl_in, ppl_shuffled = lm.perplexity(held_out), lm.perplexity(shuffled)
    assert math.isfinite(ppl_in) and math.isfinite(ppl_shuffled)
    assert 1.0 < ppl_in < ppl_shuffled / 1.5
    oov = [["the", "zebra", "sees", "the", "ball"]]
    assert lm.perplexity(oov, include_oov=False) < lm.perplexity(oov)  # <unk> is costly


# ---- (7) CLI ---------------------------------------------------------------------------


TRAIN_TEXT = """\
u1 the cat sees the ball
u2 the dog likes a bone
u3 a secret test sentence
u4 the cat likes the garden

u5 the   dog sees the ball
"""
DEV_TEXT = "d1 a secret test sentence\nd2 never seen anywhere\n"


def test_cli_lm_train_end_to_end(tmp_path, capsys):
    import kaldifst

    (tmp_path / "text").write_text(TRAIN_TEXT, encoding="utf-8")
    (tmp_path / "dev").write_text(DEV_TEXT, encoding="utf-8")
    (tmp_path / "plain.txt").write_text("the bird feeds the cat\n", encoding="utf-8")
    out = tmp_path / "lm"
    rc = main([
        "lm", "train", "--text", str(tmp_path / "text"), "--kaldi-text",
        "--exclude", str(tmp_path / "dev"), "--exclude-kaldi-text",
        "--order", "3", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "on 4 sentences" in printed and "dropped 1 excluded lines" in printed
    assert re.search(r"ngram 1=\d+", printed) and "ngram 3=" in printed
    lm = read_arpa(out / "lm.arpa")
    assert "secret" not in lm.vocab and "u1" not in lm.vocab and "cat" in lm.vocab
    words = (out / "words.txt").read_text().splitlines()
    assert words[0] == "<eps> 0" and words[1] == "<unk> 1"
    assert [w.split()[0] for w in words[-3:]] == ["#0", BOS, EOS]
    assert kaldifst.StdVectorFst.read(str(out / "G.fst")).num_states > 0

    # Characters, plain text; then a closed vocabulary from an existing words.txt.
    rc = main(["lm", "train", "--text", str(tmp_path / "plain.txt"), "--unit", "char",
               "--order", "2", "--out", str(tmp_path / "chars")])  # fmt: skip
    assert rc == 0
    assert {"▁", "t", "h"} <= set(read_arpa(tmp_path / "chars" / "lm.arpa").vocab)
    write_symbol_table(make_symbol_table(["the", "cat", "<UNK>"], unk="<UNK>"), tmp_path / "w.txt")
    rc = main(["lm", "train", "--text", str(tmp_path / "plain.txt"), "--words-txt",
               str(tmp_path / "w.txt"), "--unk", "<UNK>", "--out", str(tmp_path / "closed")])  # fmt: skip
    assert rc == 0
    closed = read_arpa(tmp_path / "closed" / "lm.arpa", unk="<UNK>")
    assert set(closed.vocab) == {"the", "cat", "<UNK>", BOS, EOS}
    assert (tmp_path / "closed" / "words.txt").read_text() == (tmp_path / "w.txt").read_text()

    # Errors are reported, not raised.
    rc = main(["lm", "train", "--text", str(tmp_path / "dev"), "--kaldi-text", "--exclude",
               str(tmp_path / "dev"), "--exclude-kaldi-text", "--out", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2 and "no sentences" in capsys.readouterr().err
