"""Pruned RNN-T: simple / smoothed losses, prune ranges, pruning and the pruned loss."""

from __future__ import annotations

import pytest
import torch

from speechfm.ops import (
    RNNTInputError,
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    mutual_information_recursion,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)
from speechfm.ops.rnnt_reference import pruned_rnnt_loss_reference


def batch(seed, N=3, T=7, U=4, V=6, C=5):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(N, T, V, generator=g, dtype=torch.float64)
    lm = torch.randn(N, U + 1, V, generator=g, dtype=torch.float64)
    enc = torch.randn(N, T, C, generator=g, dtype=torch.float64)
    pred = torch.randn(N, U + 1, C, generator=g, dtype=torch.float64)
    targets = torch.randint(1, V, (N, U), generator=g)
    logit_lengths = torch.tensor([T] + [max(1, T - 2 * i) for i in range(1, N)])
    target_lengths = torch.tensor([U] + [max(0, U - i) for i in range(1, N)])
    return am, lm, enc, pred, targets, logit_lengths, target_lengths


def with_grads(fn, *tensors, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves, **kw)
    loss = out[0] if isinstance(out, tuple) else out
    loss.sum().backward()
    return loss.detach(), [t.grad for t in leaves], out


def test_simple_loss_equals_full_loss_of_additive_joiner(backend):
    am, lm, _, _, y, tl, ul = batch(0)
    s, gs, _ = with_grads(lambda a, m: rnnt_loss_simple(a, m, y, tl, ul, reduction="none",
                                                         backend=backend), am, lm)
    f, gf, _ = with_grads(lambda a, m: rnnt_loss(a.unsqueeze(2) + m.unsqueeze(1), y, tl, ul,
                                                 reduction="none", backend=backend), am, lm)
    torch.testing.assert_close(s, f)
    for a, b in zip(gs, gf, strict=True):
        torch.testing.assert_close(a, b)


def test_smoothed_loss_matches_its_definition(backend):
    am, lm, _, _, y, tl, ul = batch(1)
    lm_s, am_s = 0.25, 0.1
    out = rnnt_loss_smoothed(am, lm, y, tl, ul, lm_only_scale=lm_s, am_only_scale=am_s,
                             reduction="none", backend=backend)
    # Direct construction: interpolate the three log-softmaxes, gather blank / next label,
    # and run the recursion.
    N, T, V = am.shape
    U = lm.size(1) - 1
    lp = ((1 - lm_s - am_s) * (am.unsqueeze(2) + lm.unsqueeze(1)).log_softmax(-1)
          + lm_s * lm.log_softmax(-1).unsqueeze(1) + am_s * am.log_softmax(-1).unsqueeze(2))
    py = lp[..., 0].transpose(1, 2)
    px = torch.full((N, U, T + 1), float("-inf"), dtype=am.dtype)
    for n in range(N):
        for u in range(U):
            px[n, u, : tl[n]] = lp[n, : tl[n], u, y[n, u]]
    boundary = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], 1)
    ref = -mutual_information_recursion(px, py, boundary, backend="torch")
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("s_range", [2, 3, 5])
def test_prune_ranges_keep_a_path(backend, s_range):
    am, lm, _, _, y, tl, ul = batch(2, N=4, T=9, U=6)
    _, (px_grad, py_grad) = rnnt_loss_simple(am, lm, y, tl, ul, return_grad=True,
                                             backend=backend)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range)
    R = min(s_range, 7)
    assert ranges.shape == (4, 9, R) and ranges.dtype == torch.long
    assert (ranges[..., 1:] - ranges[..., :-1] == 1).all()
    start = ranges[..., 0]
    assert (start[:, 0] == 0).all()
    steps = start[:, 1:] - start[:, :-1]
    assert (steps >= 0).all() and (steps <= R - 1).all()
    assert (ranges >= 0).all() and (ranges <= 6).all()
    for n in range(4):
        last = int(tl[n]) - 1
        assert int(ul[n]) in ranges[n, last].tolist()


def test_prune_ranges_follow_the_mass():
    # Occupancies concentrated on the diagonal s = t / 2: windows must cover it.
    N, U, T = 1, 5, 10
    py_grad = torch.zeros(N, U + 1, T)
    for t in range(T):
        py_grad[0, t // 2, t] = 1.0
    px_grad = torch.zeros(N, U, T + 1)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, torch.tensor([T]), torch.tensor([U]), 2)
    for t in range(T):
        assert t // 2 in ranges[0, t].tolist()


def test_pruned_equals_full_when_nothing_is_pruned(backend):
    am, lm, enc, pred, y, tl, ul = batch(3)
    _, (px_grad, py_grad) = rnnt_loss_simple(am, lm, y, tl, ul, return_grad=True,
                                             backend=backend)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range=y.size(1) + 1)
    assert (ranges == torch.arange(y.size(1) + 1)).all()
    joiner = torch.nn.Linear(enc.size(-1), am.size(-1)).double()

    def pruned(e, p):
        ep, pp = do_rnnt_pruning(e, p, ranges)
        return rnnt_loss_pruned(joiner(torch.tanh(ep + pp)), y, ranges, tl, ul, reduction="none",
                                backend=backend)

    def full(e, p):
        return rnnt_loss(joiner(torch.tanh(e.unsqueeze(2) + p.unsqueeze(1))), y, tl, ul,
                         reduction="none", backend=backend)

    c1, g1, _ = with_grads(pruned, enc, pred)
    c2, g2, _ = with_grads(full, enc, pred)
    torch.testing.assert_close(c1, c2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("s_range", [2, 3])
def test_pruned_matches_brute_force(backend, s_range):
    am, lm, _, _, y, tl, ul = batch(4, N=4, T=8, U=5)
    _, (px_grad, py_grad) = rnnt_loss_simple(am, lm, y, tl, ul, return_grad=True,
                                             backend=backend)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range)
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 8, s_range, 6, generator=g, dtype=torch.float64)
    c, (gr,), _ = with_grads(lambda x: rnnt_loss_pruned(x, y, ranges, tl, ul, reduction="none",
                                                         backend=backend), logits)
    ref, (ref_g,), _ = with_grads(
        lambda x: pruned_rnnt_loss_reference(x, y, ranges, tl, ul), logits)
    torch.testing.assert_close(c, ref)
    torch.testing.assert_close(gr, ref_g)
    # A narrower band keeps fewer paths: its cost can only be higher than the full one.
    full = rnnt_loss(logits.new_zeros(4, 8, 6, 6), y, tl, ul, reduction="none",
                     backend=backend)
    band = rnnt_loss_pruned(logits.new_zeros(4, 8, s_range, 6), y, ranges, tl, ul,
                            reduction="none", backend=backend)
    assert (band >= full - 1e-9).all()


def test_pruned_inplace_and_float32(backend):
    am, lm, _, _, y, tl, ul = batch(6)
    _, (px_grad, py_grad) = rnnt_loss_simple(am.float(), lm.float(), y, tl, ul,
                                             return_grad=True, backend=backend)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, 3)
    logits = torch.randn(3, 7, 3, 6)
    _, (g_ref,), _ = with_grads(lambda x: rnnt_loss_pruned(x, y, ranges, tl, ul,
                                                            backend=backend), logits)
    leaf = logits.clone().requires_grad_()
    x = leaf * 1.0
    rnnt_loss_pruned(x, y, ranges, tl, ul, inplace_grad=True, backend=backend).backward()
    torch.testing.assert_close(leaf.grad, g_ref)


def test_do_rnnt_pruning_shapes_and_gradients():
    _, _, enc, pred, _, _, _ = batch(7)
    ranges = torch.tensor([0, 0, 1, 1, 2, 2, 3]).view(1, 7, 1).expand(3, 7, 1) + torch.arange(2)
    e = enc.clone().requires_grad_()
    p = pred.clone().requires_grad_()
    ep, pp = do_rnnt_pruning(e, p, ranges)
    assert ep.shape == pp.shape == (3, 7, 2, 5)
    torch.testing.assert_close(pp[1, 4, 1], pred[1, 3])
    torch.testing.assert_close(ep[2, 5, 0], enc[2, 5])
    (ep.sum() + pp.sum()).backward()
    torch.testing.assert_close(e.grad, torch.full_like(enc, 2.0))
    # Position u is gathered once per (frame, slot) that keeps it.
    counts = torch.tensor([2.0, 4.0, 4.0, 3.0, 1.0], dtype=pred.dtype).view(1, 5, 1)
    torch.testing.assert_close(p.grad, counts.expand_as(pred))


def test_invalid_inputs():
    am, lm, _, _, y, tl, ul = batch(8)
    with pytest.raises(RNNTInputError, match="s_range must be >= 2"):
        get_rnnt_prune_ranges(torch.zeros(3, 4, 8), torch.zeros(3, 5, 7), tl, ul, 1)
    with pytest.raises(RNNTInputError, match="disagree"):
        rnnt_loss_simple(am, lm[:, :, :3], y, tl, ul)
    with pytest.raises(RNNTInputError, match="lm_only_scale"):
        rnnt_loss_smoothed(am, lm, y, tl, ul, lm_only_scale=0.8, am_only_scale=0.5)
    logits = torch.randn(3, 7, 2, 6)
    ranges = torch.zeros(3, 7, 2, dtype=torch.long)
    with pytest.raises(RNNTInputError, match="utterance 0: ranges at frame 0"):
        rnnt_loss_pruned(logits, y, ranges, tl, ul)
    ranges = torch.arange(2).expand(3, 7, 2).clone()
    ranges[2, 3] += 3  # [3, 4] for U = 4 is fine; [4, 5] is not
    ranges[2, 4] += 4
    with pytest.raises(RNNTInputError, match="utterance 2: ranges at frame 4"):
        rnnt_loss_pruned(logits, y, ranges, tl, ul)
    with pytest.raises(RNNTInputError, match="utterance 1: target 0 equals the blank"):
        y2 = y.clone()
        y2[1, 0] = 0
        rnnt_loss_simple(am, lm, y2, tl, ul)
