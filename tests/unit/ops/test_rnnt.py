"""Full RNN-T loss: C++ and pure-PyTorch backends against the float64 brute force."""

from __future__ import annotations

import pytest
import torch

from speechfm.ops import RNNTInputError, rnnt_loss
from speechfm.ops.rnnt_reference import rnnt_loss_reference


def make_batch(seed, N, T, U, V, dtype=torch.float64, ragged=True):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(N, T, U + 1, V, generator=g, dtype=torch.float64)).to(dtype)
    targets = torch.randint(1, V, (N, U), generator=g) if V > 1 else torch.zeros(N, U, dtype=torch.long)
    logit_lengths = torch.full((N,), T)
    target_lengths = torch.full((N,), U if V > 1 else 0)
    if ragged and N > 1:
        logit_lengths[1:] = torch.randint(1, T + 1, (N - 1,), generator=g)
        if V > 1:
            target_lengths[1:] = torch.randint(0, U + 1, (N - 1,), generator=g)
    return logits, targets, logit_lengths, target_lengths


def loss_and_grad(fn, logits, *args, weights=None, **kw):
    x = logits.detach().clone().requires_grad_()
    costs = fn(x, *args, **kw)
    w = torch.ones_like(costs) if weights is None else weights.to(costs.dtype)
    (costs * w).sum().backward()
    return costs.detach(), x.grad


def reference(logits, *args, **kw):
    return loss_and_grad(rnnt_loss_reference, logits.double(), *args, **kw)


SHAPES = [
    (1, 1, 0, 1),  # T = 1, U = 0, V = 1 (blank only)
    (2, 1, 3, 5),  # one frame, three labels: U > T
    (3, 4, 6, 8),  # U > T, ragged
    (16, 5, 3, 4),  # N = 16, ragged
    (2, 3, 2, 5000),  # large vocabulary
    (4, 6, 4, 37),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-U{}-V{}".format(*s))
def test_matches_brute_force_float64(backend, shape):
    logits, targets, tl, ul = make_batch(sum(shape), *shape)
    ref_c, ref_g = reference(logits, targets, tl, ul)
    c, g = loss_and_grad(rnnt_loss, logits, targets, tl, ul, reduction="none", backend=backend)
    assert c.dtype == torch.float64
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g, ref_g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 4, 6, 8), (4, 7, 3, 300)])
def test_float32_matches_brute_force(backend, shape):
    logits, targets, tl, ul = make_batch(7, *shape, dtype=torch.float32)
    ref_c, ref_g = reference(logits, targets, tl, ul)
    c, g = loss_and_grad(rnnt_loss, logits, targets, tl, ul, reduction="none", backend=backend)
    assert c.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(c.double(), ref_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g.double(), ref_g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck(extension, fused):
    logits, targets, tl, ul = make_batch(3, 2, 3, 2, 5)
    if not fused:
        logits = logits.log_softmax(-1)
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: rnnt_loss(z, targets, tl, ul, reduction="mean", fused_log_softmax=fused,
                            backend="extension"), (x,))


def test_log_prob_inputs(backend):
    logits, targets, tl, ul = make_batch(11, 3, 5, 3, 9)
    lp = logits.log_softmax(-1)
    ref_c, ref_g = reference(lp, targets, tl, ul, fused_log_softmax=False)
    c, g = loss_and_grad(rnnt_loss, lp, targets, tl, ul, reduction="none", backend=backend,
                         fused_log_softmax=False)
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g, ref_g, rtol=1e-9, atol=1e-10)
    # Only the blank and label entries of valid rows carry a gradient.
    assert (g != 0).sum() <= 2 * g[..., 0].numel()


@pytest.mark.parametrize("blank", [-1, 5])
def test_other_blank_ids(backend, blank):
    logits, _, tl, ul = make_batch(5, 3, 4, 3, 9)
    V = logits.size(-1)
    b = blank % V
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, V - 1, (3, 3), generator=g)
    targets[targets >= b] += 1  # never the blank
    ref_c, ref_g = reference(logits, targets, tl, ul, blank=b)
    c, gr = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                          backend=backend)
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gr, ref_g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(backend, dtype):
    logits, targets, tl, ul = make_batch(13, 4, 6, 4, 30, dtype=dtype)
    # Arithmetic is float32 on the rounded inputs, so the costs are close to the float64
    # costs of those same inputs; the gradient is rounded to the input dtype.
    ref_c, ref_g = reference(logits, targets, tl, ul)
    c, g = loss_and_grad(rnnt_loss, logits, targets, tl, ul, reduction="none", backend=backend)
    assert c.dtype == torch.float32 and g.dtype == dtype
    torch.testing.assert_close(c.double(), ref_c, rtol=1e-5, atol=1e-4)
    tol = 2e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(g.double(), ref_g, rtol=tol, atol=tol)


def test_reductions(backend):
    logits, targets, tl, ul = make_batch(17, 4, 5, 3, 6)
    none, g_none = loss_and_grad(rnnt_loss, logits, targets, tl, ul, reduction="none",
                                 backend=backend)
    x = logits.clone().requires_grad_()
    total = rnnt_loss(x, targets, tl, ul, reduction="sum", backend=backend)
    total.backward()
    torch.testing.assert_close(total.detach(), none.sum())
    torch.testing.assert_close(x.grad, g_none)
    x.grad = None
    mean = rnnt_loss(x, targets, tl, ul, reduction="mean", backend=backend)
    mean.backward()
    torch.testing.assert_close(mean.detach(), none.mean())
    torch.testing.assert_close(x.grad, g_none / 4)


def test_gradient_clamp(backend):
    logits, targets, tl, ul = make_batch(19, 3, 5, 3, 6)
    weights = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    _, ref_unit = reference(logits, targets, tl, ul)
    clamp = 0.05
    _, g = loss_and_grad(rnnt_loss, logits, targets, tl, ul, weights=weights, reduction="none",
                         clamp=clamp, backend=backend)
    # The clamp bounds d cost_n / d logits before the incoming gradient scales it.
    expected = ref_unit.clamp(-clamp, clamp) * weights.view(3, 1, 1, 1)
    torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-10)
    assert (ref_unit.abs() > clamp).any()


def test_inplace_gradient(backend):
    logits, targets, tl, ul = make_batch(23, 3, 5, 3, 7, dtype=torch.float32)
    _, g_ref = loss_and_grad(rnnt_loss, logits, targets, tl, ul, backend=backend)
    leaf = logits.clone().requires_grad_()
    x = leaf * 1.0  # a non-leaf (e.g. a joiner output) whose memory the gradient reuses
    rnnt_loss(x, targets, tl, ul, inplace_grad=True, backend=backend).backward()
    torch.testing.assert_close(leaf.grad, g_ref)
    torch.testing.assert_close(x.detach(), g_ref)  # the logits' memory now holds the gradient


def test_padding_gets_zero_gradient(backend):
    logits, targets, _, _ = make_batch(29, 2, 6, 4, 5)
    tl, ul = torch.tensor([6, 3]), torch.tensor([4, 2])
    _, g = loss_and_grad(rnnt_loss, logits, targets, tl, ul, backend=backend)
    assert (g[1, 3:] == 0).all() and (g[1, :, 3:] == 0).all()
    assert (g[1, :3, :3] != 0).any()


def test_inf_heavy_inputs(backend):
    logits, targets, tl, ul = make_batch(31, 4, 6, 3, 20)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(logits.shape, generator=g) < 0.6
    mask[..., 0] = False  # blanks stay finite, so every utterance keeps a path
    for n in range(4):  # and the labels the utterance needs
        for u in range(int(ul[n])):
            mask[n, :, u, targets[n, u]] = False
    x = logits.masked_fill(mask, float("-inf"))
    c, gr = loss_and_grad(rnnt_loss, x, targets, tl, ul, reduction="none", backend=backend)
    ref_c, _ = reference(x, targets, tl, ul)
    # exp(-1e4) is exactly 0 in float64, so this finite input has the same gradient.
    _, ref_g = reference(logits.masked_fill(mask, -1e4), targets, tl, ul)
    assert torch.isfinite(c).all() and torch.isfinite(gr).all()
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gr, ref_g, rtol=1e-9, atol=1e-10)


def test_inf_rows_and_infeasible_utterances(backend):
    logits, targets, tl, ul = make_batch(37, 3, 4, 2, 6, ragged=False)
    x = logits.clone()
    x[0, 1, 1] = float("-inf")  # a whole row of -inf: the cell is a dead end
    x[1, 3, 2, 0] = float("-inf")  # no final blank: utterance 1 has no path at all
    c, g = loss_and_grad(rnnt_loss, x, targets, tl, ul, reduction="none", backend=backend)
    assert torch.isfinite(c[0]) and torch.isinf(c[1]) and torch.isfinite(c[2])
    assert not torch.isnan(g).any()
    assert (g[1] == 0).all()
    assert (g[0, 1, 1] == 0).all()
    ref_c, ref_g = reference(logits, targets, tl, ul)
    torch.testing.assert_close(c[2], ref_c[2])
    torch.testing.assert_close(g[2], ref_g[2])


def test_backends_agree_float32(extension):
    logits, targets, tl, ul = make_batch(41, 6, 20, 8, 60, dtype=torch.float32)
    c1, g1 = loss_and_grad(rnnt_loss, logits, targets, tl, ul, backend="extension")
    c2, g2 = loss_and_grad(rnnt_loss, logits, targets, tl, ul, backend="torch")
    torch.testing.assert_close(c1, c2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_int32_targets_and_lengths(backend):
    logits, targets, tl, ul = make_batch(43, 3, 4, 3, 7)
    ref_c, _ = reference(logits, targets, tl, ul)
    c = rnnt_loss(logits, targets.int(), tl.int(), ul.int(), reduction="none", backend=backend)
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------
# Invalid inputs
# --------------------------------------------------------------------------------------
def _valid():
    return make_batch(47, 3, 4, 3, 6)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda b: b[2].__setitem__(1, 5), "utterance 1: logit_lengths is 5, outside"),
        (lambda b: b[2].__setitem__(2, 0), "utterance 2: logit_lengths is 0"),
        (lambda b: b[3].__setitem__(0, 4), "utterance 0: target_lengths is 4, outside"),
        (lambda b: b[3].__setitem__(1, -1), "utterance 1: target_lengths is -1"),
        (lambda b: b[1].__setitem__((2, 1), 0), "utterance 2: target 1 equals the blank id 0"),
        (lambda b: b[1].__setitem__((0, 2), 6), "utterance 0: target 2 is 6, outside"),
        (lambda b: b[1].__setitem__((1, 0), -3), "utterance 1: target 0 is -3, outside"),
    ],
)
def test_invalid_values(mutate, message):
    batch = list(_valid())
    batch[3][:] = 3
    batch[2][:] = 4
    mutate(batch)
    with pytest.raises(RNNTInputError, match=message):
        rnnt_loss(*batch, backend="torch")


def test_invalid_types_shapes_and_options():
    logits, targets, tl, ul = _valid()
    cases = [
        ((logits.long(), targets, tl, ul), {}, "float32/float64/float16/bfloat16"),
        ((logits[0], targets, tl, ul), {}, "4 dimensions"),
        ((logits, targets.double(), tl, ul), {}, "targets must be an integer tensor"),
        ((logits, targets, tl.float(), ul), {}, "logit_lengths must be an integer tensor"),
        ((logits, targets.to("meta"), tl, ul), {}, "targets is on meta"),
        ((logits, targets[:2], tl, ul), {}, "batch sizes differ"),
        ((logits, targets[:, :2], tl, ul), {}, "symbol positions"),
        ((logits, targets, tl, ul), {"blank": 6}, "blank = 6 is outside"),
        ((logits, targets, tl, ul), {"reduction": "avg"}, "reduction"),
        ((logits, targets, tl, ul), {"backend": "cuda"}, "backend"),
    ]
    for args, kw, message in cases:
        with pytest.raises(RNNTInputError, match=message):
            rnnt_loss(*args, **kw)


def test_unvalidated_bad_values_give_nan_not_crashes(extension):
    logits, targets, tl, ul = _valid()
    ul[:] = 3
    tl[:] = 4
    bad_len = tl.clone()
    bad_len[1] = 9  # beyond the tensor
    c = rnnt_loss(logits, targets, bad_len, ul, reduction="none", validate=False,
                  backend="extension")
    assert torch.isnan(c[1]) and torch.isfinite(c[[0, 2]]).all()
    bad_target = targets.clone()
    bad_target[2, 0] = 0  # the blank
    bad_target[0, 1] = 99  # outside the vocabulary
    c = rnnt_loss(logits, bad_target, tl, ul, reduction="none", validate=False,
                  backend="extension")
    assert torch.isnan(c[[0, 2]]).all() and torch.isfinite(c[1])
