"""speechfm.losses.ssl: distractor sampling, the contrastive loss against a per-frame
reference, the feature penalty and the masked-prediction loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speechfm.losses.ssl import (
    contrastive_loss,
    feature_penalty,
    masked_prediction_loss,
    sample_negatives,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_mask(n: int, t: int, p: float, seed: int) -> torch.Tensor:
    return torch.rand(n, t, generator=_gen(seed)) < p


def test_negatives_are_distinct_same_utterance_masked_frames_never_the_positive():
    n, t, k = 5, 40, 8
    mask = _random_mask(n, t, 0.5, 0)
    mask[3] = False
    mask[3, [2, 9, 30]] = True  # 3 masked frames: 2 distractors each, 6 invalid
    mask[4] = False
    mask[4, 7] = True  # a lone masked frame: nothing to contrast with
    neg_index, neg_valid = sample_negatives(mask, k, generator=_gen(1))
    frames = mask.reshape(-1).nonzero().squeeze(1)
    assert neg_index.shape == (len(frames), k) and neg_index.dtype == torch.int64
    counts = mask.sum(1)
    flat_mask = mask.reshape(-1)
    for row, pos in enumerate(frames.tolist()):
        utt = pos // t
        chosen = neg_index[row][neg_valid[row]].tolist()
        assert len(chosen) == min(k, int(counts[utt]) - 1)
        assert len(set(chosen)) == len(chosen)
        assert pos not in chosen
        assert all(c // t == utt and bool(flat_mask[c]) for c in chosen)
        # Valid entries come first; invalid ones point at the frame itself.
        assert neg_valid[row].tolist() == sorted(neg_valid[row].tolist(), reverse=True)
        assert bool((neg_index[row][~neg_valid[row]] == pos).all())
    rows3 = (frames // t == 3).nonzero().squeeze(1)
    for row, pos in zip(rows3.tolist(), (3 * t + 2, 3 * t + 9, 3 * t + 30), strict=True):
        others = {3 * t + 2, 3 * t + 9, 3 * t + 30} - {pos}
        assert set(neg_index[row][neg_valid[row]].tolist()) == others
    row4 = int((frames == 4 * t + 7).nonzero())
    assert not bool(neg_valid[row4].any())


def test_negatives_are_uniform_over_the_other_masked_frames():
    reps, t = 3000, 10
    mask = torch.zeros(reps, t, dtype=torch.bool)
    mask[:, [0, 2, 3, 5, 7, 8]] = True  # 6 masked frames per utterance
    neg_index, neg_valid = sample_negatives(mask, 2, generator=_gen(2))
    assert bool(neg_valid.all())
    first = neg_index.view(reps, 6, 2)[:, 0] % t  # distractors of frame 0 of each utterance
    freq = torch.bincount(first.reshape(-1), minlength=t).float() / reps
    assert float(freq[0]) == 0.0
    for c in (2, 3, 5, 7, 8):
        assert abs(float(freq[c]) - 2 / 5) < 0.04


def test_sampling_is_deterministic_and_handles_empty_masks():
    mask = _random_mask(3, 30, 0.4, 3)
    a = sample_negatives(mask, 5, generator=_gen(4))
    b = sample_negatives(mask, 5, generator=_gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    idx, valid = sample_negatives(torch.zeros(2, 4, dtype=torch.bool), 5)
    assert idx.shape == (0, 5) and valid.shape == (0, 5)
    idx, valid = sample_negatives(mask, 0)
    assert idx.shape == (int(mask.sum()), 0)


def _reference_contrastive(context, targets, mask, neg_index, neg_valid, temperature):
    """Per-frame InfoNCE with Python loops (float64)."""
    n, t, d = context.shape
    ctx_flat, tgt_flat = context.reshape(-1, d), targets.reshape(-1, d)
    frames = mask.reshape(-1).nonzero().squeeze(1).tolist()
    total, correct, used = 0.0, 0, 0
    for row, pos in enumerate(frames):
        c, q = ctx_flat[pos], tgt_flat[pos]

        def sim(a, b):
            return float(a @ b) / (float(a.norm()) * float(b.norm())) / temperature

        pos_logit = sim(c, q)
        neg_logits = []
        for j in range(neg_index.shape[1]):
            other = tgt_flat[int(neg_index[row, j])]
            if bool(neg_valid[row, j]) and not torch.equal(other, q):
                neg_logits.append(sim(c, other))
        used += len(neg_logits)
        logsumexp = math.log(sum(math.exp(x) for x in [pos_logit, *neg_logits]))
        total += logsumexp - pos_logit
        correct += all(pos_logit > x for x in neg_logits)
    return total, len(frames), correct, used / max(len(frames), 1)


def test_contrastive_loss_matches_per_frame_reference_in_float64():
    n, t, d, k = 3, 25, 6, 7
    g = _gen(5)
    context = torch.randn(n, t, d, generator=g, dtype=torch.float64)
    targets = torch.randn(n, t, d, generator=g, dtype=torch.float64)
    mask = _random_mask(n, t, 0.5, 6)
    mask[2] = False
    mask[2, [1, 4, 5]] = True  # fewer masked frames than k
    # Two masked frames with identical targets: each is dropped as the other's distractor.
    a, b = mask[0].nonzero().squeeze(1)[:2].tolist()
    targets[0, b] = targets[0, a]
    negatives = sample_negatives(mask, k, generator=_gen(7))
    out = contrastive_loss(context, targets, mask, temperature=0.1, negatives=negatives)
    ref_loss, ref_count, ref_correct, ref_used = _reference_contrastive(
        context, targets, mask, *negatives, 0.1
    )
    assert out.loss.dtype == torch.float64
    assert float(out.loss) == pytest.approx(ref_loss, abs=1e-5)
    assert int(out.count) == ref_count == int(mask.sum())
    assert int(out.correct) == ref_correct
    assert float(out.num_negatives_used) == pytest.approx(ref_used)
    assert ref_used < k  # the short utterance and the duplicate really removed some


def test_contrastive_loss_samples_its_own_negatives_reproducibly():
    context, targets = torch.randn(2, 30, 8), torch.randn(2, 30, 8)
    mask = _random_mask(2, 30, 0.6, 8)
    a = contrastive_loss(context, targets, mask, num_negatives=5, generator=_gen(9))
    b = contrastive_loss(
        context, targets, mask, negatives=sample_negatives(mask, 5, generator=_gen(9))
    )
    assert torch.equal(a.loss, b.loss)
    assert float(a.num_negatives_used) == 5.0


def test_perfect_predictor_is_always_right_and_beats_random_context():
    n, t = 2, 20
    d = n * t
    targets = torch.eye(d, dtype=torch.float64).view(n, t, d)  # orthogonal targets
    mask = _random_mask(n, t, 0.6, 10)
    negatives = sample_negatives(mask, 10, generator=_gen(11))
    perfect = contrastive_loss(targets.clone(), targets, mask, negatives=negatives)
    assert int(perfect.correct) == int(perfect.count) == int(mask.sum())
    random_ctx = torch.randn(n, t, d, generator=_gen(12), dtype=torch.float64)
    chance = contrastive_loss(random_ctx, targets, mask, negatives=negatives)
    assert float(perfect.loss) < float(chance.loss)
    assert int(chance.correct) < int(chance.count)
    # cos = 1 vs 0 at temperature 0.1: per-frame loss log(1 + K' e^-10).
    per_frame = math.log(1 + 10 * math.exp(-10.0))
    assert float(perfect.loss) == pytest.approx(per_frame * int(mask.sum()), rel=1e-9)


def test_a_tie_with_a_distractor_is_not_correct_but_an_identical_one_is_dropped():
    targets = torch.eye(4, dtype=torch.float64).view(1, 4, 4)
    targets[0, 1] = 2 * targets[0, 0]  # same direction, not the same vector: a tie
    mask = torch.tensor([[True, True, True, False]])
    out = contrastive_loss(targets.clone(), targets, mask, num_negatives=2, generator=_gen(0))
    assert int(out.count) == 3 and int(out.correct) == 1  # frames 0 and 1 tie
    targets[0, 1] = targets[0, 0]  # identical: dropped, so frames 0 and 1 are right
    out = contrastive_loss(targets.clone(), targets, mask, num_negatives=2, generator=_gen(0))
    assert int(out.correct) == 3
    assert float(out.num_negatives_used) == pytest.approx(4 / 3)


def test_gradients_reach_context_and_the_read_targets_only():
    n, t, d = 2, 16, 5
    context = torch.randn(n, t, d, requires_grad=True)
    targets = torch.randn(n, t, d, requires_grad=True)
    mask = _random_mask(n, t, 0.5, 13)
    out = contrastive_loss(context, targets, mask, num_negatives=4, generator=_gen(14))
    out.loss.backward()
    assert bool(torch.isfinite(context.grad).all()) and bool(torch.isfinite(targets.grad).all())
    assert bool((context.grad[mask].abs().sum(-1) > 0).all())
    assert bool((context.grad[~mask] == 0).all()) and bool((targets.grad[~mask] == 0).all())
    assert float(targets.grad[mask].abs().sum()) > 0


def test_no_masked_frames_gives_a_zero_loss_with_a_graph():
    context = torch.randn(2, 5, 3, requires_grad=True)
    out = contrastive_loss(context, torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.bool))
    assert out.loss.item() == 0.0 and int(out.count) == 0 and int(out.correct) == 0
    out.loss.backward()
    assert bool((context.grad == 0).all())


def test_contrastive_validation():
    x = torch.randn(2, 5, 3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask"):
        contrastive_loss(x, x, mask.float())
    with pytest.raises(ValueError, match="context and targets"):
        contrastive_loss(x, x[..., :2], mask)
    with pytest.raises(ValueError, match="negatives"):
        contrastive_loss(x, x, mask, negatives=sample_negatives(mask[:1], 3))


def test_feature_penalty_is_the_mean_square_over_valid_frames():
    feats = torch.randn(2, 6, 4)
    assert float(feature_penalty(feats)) == pytest.approx(float(feats.pow(2).mean()))
    valid = torch.zeros(2, 6, dtype=torch.bool)
    valid[0, :4], valid[1, :2] = True, True
    padded = feats.clone()
    padded[~valid] = float("nan")
    expected = float(feats[valid].pow(2).mean())
    assert float(feature_penalty(padded, valid)) == pytest.approx(expected)
    assert float(feature_penalty(feats, torch.zeros(2, 6, dtype=torch.bool))) == 0.0


@pytest.mark.parametrize("groups", [None, 1, 3])
def test_masked_prediction_loss_counts_masked_frames_only(groups):
    n, t, v = 3, 12, 9
    g = _gen(15)
    shape = (n, t, v) if groups is None else (n, t, groups, v)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, v, shape[:-1], generator=g)
    mask = _random_mask(n, t, 0.5, 16)
    loss, count, correct = masked_prediction_loss(logits, ids, mask)
    picked, target = logits[mask].reshape(-1, v), ids[mask].reshape(-1)
    assert loss.item() == pytest.approx(F.cross_entropy(picked, target, reduction="sum").item())
    assert int(count) == int(mask.sum()) * (groups or 1)
    assert int(correct) == int((picked.argmax(-1) == target).sum())
    # Logits and ids at unmasked frames do not matter (even out-of-range ids).
    changed = logits.detach().clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    bad_ids = ids.clone()
    bad_ids[~mask] = -1
    again, _, _ = masked_prediction_loss(changed, bad_ids, mask)
    assert again.item() == pytest.approx(loss.item(), rel=1e-12)
    loss.backward()
    assert bool((logits.grad[~mask] == 0).all()) and float(logits.grad[mask].abs().sum()) > 0


def test_masked_prediction_loss_validation_and_empty_mask():
    logits = torch.randn(2, 4, 2, 5)
    ids = torch.zeros(2, 4, 2, dtype=torch.int64)
    loss, count, correct = masked_prediction_loss(logits, ids, torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and int(count) == 0 and int(correct) == 0
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        masked_prediction_loss(logits, ids + 5, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="must match"):
        masked_prediction_loss(logits, ids[..., :1], torch.ones(2, 4, dtype=torch.bool))
