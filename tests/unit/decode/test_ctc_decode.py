"""speechfm.decode.ctc: greedy, prefix beam search (vs brute force), alignment, timestamps."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
import torch

from speechfm.decode import (
    CtcHypothesis,
    ctc_forced_align,
    ctc_greedy_hypotheses,
    ctc_greedy_search,
    ctc_prefix_beam_search,
    word_timestamps,
)
from speechfm.text import BpeTokenizer, CharTokenizer, IpaTokenizer


def _collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != blank and s != prev:
            out.append(s)
        prev = s
    return tuple(out)


def _brute_force(lp: torch.Tensor):
    """Exact prefix probabilities and best-path log-probs by enumerating every path."""
    t, v = lp.shape
    total: dict[tuple, float] = defaultdict(float)
    best: dict[tuple, float] = defaultdict(lambda: -math.inf)
    for path in itertools.product(range(v), repeat=t):
        score = float(lp[range(t), list(path)].sum())
        key = _collapse(path)
        total[key] += math.exp(score)
        best[key] = max(best[key], score)
    return {k: math.log(p) for k, p in total.items()}, dict(best)


def _random_lp(n, t, v, seed=0, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    return (sharp * torch.randn(n, t, v, generator=g, dtype=torch.float64)).log_softmax(-1)


def _one_hot_lp(labels, v, p=0.9):
    """(1, T, V) log-probs putting ``p`` on each frame's label, the rest spread evenly."""
    probs = torch.full((len(labels), v), (1 - p) / (v - 1), dtype=torch.float64)
    probs[range(len(labels)), labels] = p
    return probs.log().unsqueeze(0)


# ------------------------------------------------------------------------------ greedy


def test_greedy_collapses_repeats_and_drops_blanks():
    # frames: a a _ a b b _ _   (a=1, b=2) -> a a b
    lp = _one_hot_lp([1, 1, 0, 1, 2, 2, 0, 0], v=4)
    assert ctc_greedy_search(lp, torch.tensor([8])) == [[1, 1, 2]]
    (hyp,) = ctc_greedy_hypotheses(lp, torch.tensor([8]))
    assert hyp.tokens == [1, 1, 2]
    assert hyp.token_frames == [0, 3, 4]
    assert hyp.token_end_frames == [1, 3, 5]
    assert hyp.token_confidences == pytest.approx([0.9, 0.9, 0.9])
    assert hyp.score == pytest.approx(8 * math.log(0.9))
    # out_lens cuts the utterance: only "a a _ a" is read
    assert ctc_greedy_search(lp, torch.tensor([4])) == [[1, 1]]


def test_greedy_confidence_mean_and_max():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.8, 0.0], [0.7, 0.2, 0.1]])
    lp = probs.clamp(min=1e-12).log().unsqueeze(0)
    (mean,) = ctc_greedy_hypotheses(lp, confidence="mean")
    (mx,) = ctc_greedy_hypotheses(lp, confidence="max")
    assert mean.tokens == mx.tokens == [1]
    assert mean.token_confidences == pytest.approx([0.7])
    assert mx.token_confidences == pytest.approx([0.8])
    with pytest.raises(ValueError, match="confidence"):
        ctc_greedy_hypotheses(lp, confidence="median")


def test_greedy_batch_matches_single_and_empty_lengths():
    lp = _random_lp(3, 20, 6, seed=1, sharp=3.0)
    lens = torch.tensor([20, 11, 0])
    tokens = ctc_greedy_search(lp, lens)
    hyps = ctc_greedy_hypotheses(lp, lens)
    assert tokens[2] == [] and hyps[2].tokens == []
    for i in range(2):
        assert hyps[i].tokens == tokens[i]
        assert ctc_greedy_search(lp[i : i + 1, : lens[i]]) == [tokens[i]]
        assert all(0.0 <= c <= 1.0 for c in hyps[i].token_confidences)
        frames = hyps[i].token_frames
        assert frames == sorted(frames) and all(f < lens[i] for f in frames)
    with pytest.raises(ValueError, match="out_lens"):
        ctc_greedy_search(lp, torch.tensor([21, 1, 1]))


# ------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_beam_search_is_exact_with_a_wide_beam(seed):
    t, v = 5, 3
    lp = _random_lp(1, t, v, seed=seed, sharp=1.5)
    exact, _ = _brute_force(lp[0])
    # Every prefix of <= 5 labels over 2 symbols: 63 of them, so beam 64 prunes nothing.
    (hyps,) = ctc_prefix_beam_search(lp, beam=64, topk=v)
    assert len(hyps) == len(exact)
    for hyp in hyps:
        assert hyp.score == pytest.approx(exact[tuple(hyp.tokens)], abs=1e-9)
    best = max(exact, key=exact.get)
    assert tuple(hyps[0].tokens) == best
    assert math.fsum(math.exp(h.score) for h in hyps) == pytest.approx(1.0, abs=1e-9)


def test_prefix_beam_search_best_matches_brute_force_with_small_beam():
    # Peaky posteriors (like a trained model): a small beam finds the exact best prefix;
    # pruned alignments make its score a lower bound, missing only a sliver of mass.
    lp = _random_lp(2, 6, 4, seed=7, sharp=4.0)
    results = ctc_prefix_beam_search(lp, beam=8)
    for i in range(2):
        exact, _ = _brute_force(lp[i])
        best = max(exact, key=exact.get)
        assert tuple(results[i][0].tokens) == best
        assert exact[best] - 1e-3 < results[i][0].score <= exact[best] + 1e-12


def test_prefix_beam_search_handles_repeated_tokens():
    # "a a" needs a blank between the two a's; "a" absorbs "a a" paths without one.
    probs = torch.tensor(
        [[0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]], dtype=torch.float64
    ).clamp(min=1e-30)
    lp = probs.log().unsqueeze(0)
    exact, _ = _brute_force(lp[0])
    (hyps,) = ctc_prefix_beam_search(lp, beam=10, topk=3)
    scores = {tuple(h.tokens): h.score for h in hyps}
    # P(a a) = only path a _ a: 0.8 * 0.6 * 0.7
    assert math.exp(scores[(1, 1)]) == pytest.approx(0.8 * 0.6 * 0.7)
    # P(a) = every {_, a} path but "_ _ _" and "a _ a" = 1 - 0.036 - 0.336
    assert math.exp(scores[(1,)]) == pytest.approx(0.628)
    assert scores[(1,)] == pytest.approx(exact[(1,)])
    assert hyps[0].tokens == [1]


def test_prefix_beam_search_batch_lengths_nbest_and_confidences():
    lp = _random_lp(2, 9, 5, seed=3, sharp=2.0)
    lens = torch.tensor([9, 6])
    batch = ctc_prefix_beam_search(lp, lens, beam=5, nbest=3)
    alone = ctc_prefix_beam_search(lp[1:, :6], beam=5, nbest=3)
    assert [h.tokens for h in batch[1]] == [h.tokens for h in alone[0]]
    for hyps in batch:
        assert 1 <= len(hyps) <= 3
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            assert len(h.token_frames) == len(h.tokens) == len(h.token_confidences)
            assert all(0.0 <= c <= 1.0 for c in h.token_confidences)
            assert all(s <= e for s, e in zip(h.token_frames, h.token_end_frames, strict=True))
    # Beam search's best is at least as probable as the greedy prefix's total probability.
    greedy = ctc_greedy_search(lp, lens)
    for i in range(2):
        exact_greedy = ctc_prefix_beam_search(lp[i : i + 1, : lens[i]], beam=200, topk=5)[0]
        greedy_score = next(h.score for h in exact_greedy if h.tokens == greedy[i])
        assert batch[i][0].score >= greedy_score - 1e-9


def test_prefix_beam_search_pruning_and_arguments():
    lp = _random_lp(1, 8, 6, seed=4, sharp=3.0)
    pruned = ctc_prefix_beam_search(lp, beam=4, prune_threshold=math.log(0.05))[0]
    assert pruned and all(math.isfinite(h.score) for h in pruned)
    with pytest.raises(ValueError, match="nbest"):
        ctc_prefix_beam_search(lp, beam=2, nbest=3)
    with pytest.raises(ValueError, match="beam"):
        ctc_prefix_beam_search(lp, beam=0)
    (only_blank,) = ctc_prefix_beam_search(lp[:, :0], beam=3)
    assert [h.tokens for h in only_blank] == [[]]


# --------------------------------------------------------------------------- alignment


def test_forced_align_matches_brute_force_best_path():
    lp = _random_lp(1, 5, 3, seed=5)[0]
    _, best = _brute_force(lp)
    for tokens in ([1, 2], [1, 1], [2], []):
        hyp = ctc_forced_align(lp, tokens)
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(best[tuple(tokens)], abs=1e-9)
        assert len(hyp.token_frames) == len(tokens)
    with pytest.raises(ValueError, match="cannot be aligned"):
        ctc_forced_align(lp, [1, 1, 2, 2])  # needs 6 frames (blank between repeats), has 5
    with pytest.raises(ValueError, match="blank"):
        ctc_forced_align(lp, [0, 1])


def test_forced_align_frames_on_a_clear_path():
    # frames: _ a a _ b _ b b -> "a b b"
    lp = _one_hot_lp([0, 1, 1, 0, 2, 0, 2, 2], v=3, p=0.95)[0]
    hyp = ctc_forced_align(lp, [1, 2, 2])
    assert hyp.token_frames == [1, 4, 6]
    assert hyp.token_end_frames == [2, 4, 7]
    assert hyp.token_confidences == pytest.approx([0.95] * 3)


# -------------------------------------------------------------------------- timestamps


def test_word_timestamps_char_tokenizer():
    tok = CharTokenizer(["h", "i", "y", "o"])  # ids: <blk> 0, <unk> 1, ▁ 2, h 3, i 4, y 5, o 6
    hyp = CtcHypothesis(
        tokens=[3, 4, 2, 5, 6],  # "hi yo"
        token_frames=[2, 4, 7, 10, 12],
        token_end_frames=[2, 5, 7, 10, 13],
        token_confidences=[0.9, 0.7, 1.0, 0.5, 0.3],
    )
    words = word_timestamps(hyp, tok, frame_shift_s=0.04, offset_s=1.0)
    assert [w.word for w in words] == ["hi", "yo"]
    assert words[0].start == pytest.approx(1.0 + 2 * 0.04)
    assert words[0].end == pytest.approx(1.0 + 6 * 0.04)
    assert words[1].start == pytest.approx(1.0 + 10 * 0.04)
    assert words[1].end == pytest.approx(1.0 + 14 * 0.04)
    assert words[0].confidence == pytest.approx(0.8)
    assert words[1].confidence == pytest.approx(0.4)


def test_word_timestamps_bpe_pieces():
    class Pieces:
        """Minimal sentencepiece-like tokenizer: pieces with ▁ marking word starts."""

        kind = "bpe"
        pieces = ["<blk>", "<unk>", "▁", "▁he", "llo", "▁wor", "ld", "▁a"]

        def id_to_token(self, i):
            return self.pieces[i]

        def decode(self, ids):
            return "".join(self.pieces[i] for i in ids).replace("▁", " ").strip()

    hyp = CtcHypothesis(
        tokens=[3, 4, 5, 6, 2, 7],  # ▁he llo ▁wor ld ▁ ▁a
        token_frames=[0, 3, 6, 8, 11, 12],
        token_end_frames=[1, 3, 6, 9, 11, 12],
        token_confidences=[1.0, 0.5, 0.6, 0.8, 0.9, 0.2],
    )
    words = word_timestamps(hyp, Pieces(), frame_shift_s=0.1)
    assert [w.word for w in words] == ["hello", "world", "a"]
    assert [(round(w.start, 6), round(w.end, 6)) for w in words] == [
        (0.0, 0.4),
        (0.6, 1.0),
        (1.2, 1.3),
    ]
    assert words[1].confidence == pytest.approx(0.7)


def test_word_timestamps_trained_sentencepiece():
    texts = ["hello world the cat sat on the mat", "the world is big and the cat is small"]
    tok = BpeTokenizer.train(texts * 20, 40, "bpe")
    ids = tok.encode("hello world the cat")
    n = len(ids)
    hyp = CtcHypothesis(
        tokens=ids,
        token_frames=[3 * i for i in range(n)],
        token_end_frames=[3 * i + 1 for i in range(n)],
        token_confidences=[1.0] * n,
    )
    words = word_timestamps(hyp, tok, frame_shift_s=0.04)
    assert [w.word for w in words] == ["hello", "world", "the", "cat"]
    # each word spans from its first piece's first frame to its last piece's end
    pieces = [tok.id_to_token(i) for i in ids]
    starts = [j for j, p in enumerate(pieces) if p.startswith("▁") and p != "▁"]
    first_hello = 1 if pieces[0] == "▁" else 0
    assert words[0].start == pytest.approx(3 * first_hello * 0.04)
    assert words[-1].start == pytest.approx(3 * starts[-1] * 0.04)
    assert words[-1].end == pytest.approx((3 * (n - 1) + 2) * 0.04)


def test_word_timestamps_ipa_and_missing_frames():
    tok = IpaTokenizer(["h", "ə", "l", "oʊ"])  # <blk> 0, <unk> 1, | 2, h 3, ə 4, l 5, oʊ 6
    hyp = CtcHypothesis(
        tokens=[3, 4, 2, 5, 6],
        token_frames=[0, 1, 2, 3, 5],
        token_end_frames=[0, 1, 2, 4, 5],
        token_confidences=[1.0] * 5,
    )
    words = word_timestamps(hyp, tok, frame_shift_s=0.02)
    assert [w.word for w in words] == ["h ə", "l oʊ"]
    assert words[1].start == pytest.approx(0.06) and words[1].end == pytest.approx(0.12)
    with pytest.raises(ValueError, match="per-token frames"):
        word_timestamps(CtcHypothesis(tokens=[3]), tok, 0.04)
