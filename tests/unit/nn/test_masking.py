"""speechfm.nn.masking: span-mask statistics against exact expectations and a naive
reference, span structure, guarantees on short utterances, padding and determinism."""

from __future__ import annotations

import math
import random

import pytest
import torch

from speechfm.nn.masking import MaskingConfig, compute_span_mask, sample_span_starts


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _span_len(length: int, span: int) -> int:
    return max(1, min(span, length - 1))


def _count_dist(length: int, mask_prob: float, span: int, min_spans: int) -> dict[int, float]:
    """Exact distribution of the number of span starts of an utterance of ``length``."""
    positions = length - _span_len(length, span) + 1
    a = mask_prob * length / span
    lo, frac = math.floor(a), a - math.floor(a)
    dist: dict[int, float] = {}
    for k, p in ((lo, 1.0 - frac), (lo + 1, frac)):
        k = min(max(min_spans, k), positions)
        dist[k] = dist.get(k, 0.0) + p
    return dist


def _expected_coverage(length: int, mask_prob: float, span: int, min_spans: int) -> float:
    """Exact expected masked fraction when spans can never cover the whole utterance.

    k distinct starts uniform over P positions: frame t stays unmasked iff none of the c_t
    starts that would cover it is drawn, with probability C(P - c_t, k) / C(P, k).
    """
    s = _span_len(length, span)
    positions = length - s + 1
    total = 0.0
    for k, pk in _count_dist(length, mask_prob, span, min_spans).items():
        assert k * s < length, "the formula ignores the keep-one-unmasked rule"
        for t in range(length):
            c = min(t, positions - 1) - max(0, t - s + 1) + 1
            total += pk * (1.0 - math.comb(positions - c, k) / math.comb(positions, k))
    return total / length


def _naive_mask(
    rng: random.Random, length: int, mask_prob: float, span: int, min_spans: int
) -> list[bool]:
    """One utterance, frame by frame, straight from the rule in the module doc."""
    if length == 0:
        return []
    s = _span_len(length, span)
    positions = length - s + 1
    k = max(min_spans, math.floor(mask_prob * length / span + rng.random()))
    k = min(k, positions)
    out = [False] * length
    for start in rng.sample(range(positions), k):
        for t in range(start, start + s):
            out[t] = True
    if length >= 2 and all(out):
        out[rng.randrange(length)] = False
    return out


@pytest.mark.parametrize(
    ("length", "mask_prob", "span", "min_spans"),
    [(203, 0.65, 10, 2), (57, 0.5, 5, 2), (25, 0.65, 10, 2), (40, 0.3, 3, 4)],
)
def test_mean_coverage_matches_exact_expectation(length, mask_prob, span, min_spans):
    n = 3000
    x_lens = torch.full((n,), length, dtype=torch.int64)
    mask = compute_span_mask(
        x_lens, length, mask_prob=mask_prob, span=span, min_spans=min_spans, generator=_gen(1)
    )
    frac = mask.float().mean(dim=1)
    expected = _expected_coverage(length, mask_prob, span, min_spans)
    stderr = float(frac.std()) / math.sqrt(n)
    assert abs(float(frac.mean()) - expected) < 4 * stderr + 1e-4
    # Overlaps make the masked fraction smaller than mask_prob (documented).
    if min_spans * span <= mask_prob * length:
        assert float(frac.mean()) < mask_prob


def test_long_utterance_coverage_is_about_049_for_the_defaults():
    mask = compute_span_mask(torch.full((200,), 2000), 2000, generator=_gen(0))
    assert 0.47 < float(mask.float().mean()) < 0.51  # 1 - (1 - 0.065) ** 10 = 0.489


@pytest.mark.parametrize(("length", "span"), [(5, 4), (9, 4), (30, 4), (12, 10)])
def test_per_frame_profile_and_count_histogram_match_naive_reference(length, span):
    n, mask_prob, min_spans = 4000, 0.65, 2
    fast = compute_span_mask(
        torch.full((n,), length),
        length,
        mask_prob=mask_prob,
        span=span,
        min_spans=min_spans,
        generator=_gen(2),
    )
    rng = random.Random(3)
    slow = torch.tensor([_naive_mask(rng, length, mask_prob, span, min_spans) for _ in range(n)])
    profile_gap = (fast.float().mean(0) - slow.float().mean(0)).abs().max()
    assert float(profile_gap) < 0.045
    hist_fast = torch.bincount(fast.sum(1), minlength=length + 1).float() / n
    hist_slow = torch.bincount(slow.sum(1), minlength=length + 1).float() / n
    assert 0.5 * float((hist_fast - hist_slow).abs().sum()) < 0.05  # total variation


def test_span_count_distribution_and_min_spans():
    n = 4000
    starts, valid, span_lens = sample_span_starts(
        torch.full((n,), 203), mask_prob=0.65, span=10, min_spans=2, generator=_gen(4)
    )
    counts = valid.sum(1)
    assert set(counts.tolist()) == {13, 14}  # floor(13.195 + u)
    assert abs(float((counts == 14).float().mean()) - 0.195) < 0.03
    assert bool((span_lens == 10).all())
    # min_spans wins over a small mask_prob.
    _, valid, _ = sample_span_starts(
        torch.full((50,), 100), mask_prob=0.0, span=10, min_spans=3, generator=_gen(5)
    )
    assert bool((valid.sum(1) == 3).all())
    mask = compute_span_mask(
        torch.full((50,), 100), 100, mask_prob=0.0, span=10, min_spans=3, generator=_gen(5)
    )
    assert bool((mask.sum(1) >= 10).all()) and bool((mask.sum(1) <= 30).all())


def test_mask_is_the_union_of_distinct_full_length_spans():
    g_lens = _gen(6)
    x_lens = torch.randint(0, 120, (300,), generator=g_lens)
    x_lens[:5] = torch.tensor([0, 1, 2, 3, 11])
    kw = dict(mask_prob=0.65, span=10, min_spans=2)
    starts, valid, span_lens = sample_span_starts(x_lens, **kw, generator=_gen(7))
    mask = compute_span_mask(x_lens, 130, **kw, generator=_gen(7))
    fixed = 0
    for i, length in enumerate(x_lens.tolist()):
        s = int(span_lens[i])
        assert s == _span_len(length, 10)
        row_starts = starts[i][valid[i]].tolist()
        assert row_starts == sorted(set(row_starts))  # distinct, increasing
        assert all(0 <= p <= length - s for p in row_starts)
        union = torch.zeros(130, dtype=torch.bool)
        for p in row_starts:
            union[p : p + s] = True
        if length >= 2 and bool(union[:length].all()):
            # The keep-one-unmasked rule removed exactly one frame.
            assert int(mask[i].sum()) == length - 1 and bool((mask[i] <= union).all())
            fixed += 1
        else:
            assert torch.equal(mask[i], union)
    assert fixed > 0  # the short rows exercised the rule


def test_padding_never_masked_and_every_utterance_has_masked_and_unmasked_frames():
    x_lens = torch.randint(0, 40, (500,), generator=_gen(8))
    x_lens[:3] = torch.tensor([0, 1, 2])
    mask = compute_span_mask(x_lens, 45, mask_prob=1.0, span=3, min_spans=2, generator=_gen(9))
    assert mask.shape == (500, 45) and mask.dtype == torch.bool
    pad = torch.arange(45)[None, :] >= x_lens[:, None]
    assert not bool(mask[pad].any())
    counts = mask.sum(1)
    assert bool((counts[x_lens >= 1] >= 1).all())
    assert bool((counts[x_lens >= 2] <= x_lens[x_lens >= 2] - 1).all())
    assert counts[0] == 0 and bool(mask[1, 0])


@pytest.mark.parametrize("length", range(1, 11))
def test_short_utterances_shorter_than_a_span(length):
    mask = compute_span_mask(
        torch.full((200,), length), 12, span=10, min_spans=2, generator=_gen(length)
    )
    counts = mask.sum(1)
    if length == 1:
        assert bool(mask[:, 0].all())
    else:
        assert bool((counts >= 1).all()) and bool((counts <= length - 1).all())
        assert not bool(mask[:, length:].any())


def test_deterministic_with_a_seeded_generator():
    x_lens = torch.tensor([100, 37, 5, 0, 64])
    a = compute_span_mask(x_lens, 100, generator=_gen(10))
    b = compute_span_mask(x_lens, 100, generator=_gen(10))
    c = compute_span_mask(x_lens, 100, generator=_gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_empty_batch_and_zero_frames():
    assert compute_span_mask(torch.zeros(0, dtype=torch.int64), 7).shape == (0, 7)
    assert not bool(compute_span_mask(torch.zeros(3, dtype=torch.int64), 0).any())


def test_validation():
    with pytest.raises(ValueError, match="mask_prob"):
        compute_span_mask(torch.tensor([10]), 10, mask_prob=1.5)
    with pytest.raises(ValueError, match="span"):
        compute_span_mask(torch.tensor([10]), 10, span=0)
    with pytest.raises(ValueError, match="min_spans"):
        compute_span_mask(torch.tensor([10]), 10, min_spans=0)
    with pytest.raises(ValueError, match="exceeds max_len"):
        compute_span_mask(torch.tensor([11]), 10)
    with pytest.raises(ValueError, match="integer"):
        compute_span_mask(torch.tensor([10.0]), 10)
    with pytest.raises(ValueError, match="min_spans"):
        MaskingConfig(min_spans=0).validate()
    config = MaskingConfig()
    config.validate()
    assert config.start_prob == pytest.approx(0.065)
    with pytest.raises(TypeError):
        MaskingConfig(0.5)  # type: ignore[misc]  # kw_only
