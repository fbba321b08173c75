"""CUDA RNN-T kernels: parity with the C++ CPU path on a real GPU.

Skipped without CUDA (marker gpu). The CPU path is itself checked against the float64
brute force in tests/unit/ops, so CPU == CUDA closes the loop.
"""

from __future__ import annotations

import pytest
import torch

from speechfm.ops import (
    get_rnnt_prune_ranges,
    mutual_information_recursion,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)
from speechfm.ops._build import load_rnnt_extension

pytestmark = pytest.mark.gpu
DEV = torch.device("cuda")


@pytest.fixture(scope="module", autouse=True)
def cuda_kernels():
    ext = load_rnnt_extension()
    if ext.cuda_error is not None:
        pytest.fail(f"the CUDA kernels failed to build: {ext.cuda_error}")
    if not ext.with_cuda:
        pytest.skip("the kernels were built without CUDA (no nvcc next to this PyTorch)")
    return ext


def make_batch(seed, N, T, U, V, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(N, T, U + 1, V, generator=g)).to(dtype)
    targets = torch.randint(1, max(V, 2), (N, U), generator=g)
    tl = torch.full((N,), T)
    ul = torch.full((N,), U if V > 1 else 0)
    if N > 1:
        tl[1:] = torch.randint(1, T + 1, (N - 1,), generator=g)
        if V > 1:
            ul[1:] = torch.randint(0, U + 1, (N - 1,), generator=g)
    return logits, targets, tl, ul


def run(device, logits, targets, tl, ul, *, offset=0, weights=None, **kw):
    x = logits.to(device)
    if offset:  # misalign the rows: no 16-byte vector path for the gradient
        buf = torch.empty(x.numel() + offset, dtype=x.dtype, device=device)
        x = buf[offset:].view_as(x).copy_(x)
    x = x.detach().requires_grad_()
    costs = rnnt_loss(x, targets.to(device), tl.to(device), ul.to(device), reduction="none",
                      backend="extension", **kw)
    w = torch.ones_like(costs) if weights is None else weights.to(device, costs.dtype)
    (costs * w).sum().backward()
    return costs.detach().cpu(), x.grad.cpu()


def assert_parity(logits, targets, tl, ul, tol, **kw):
    c_cpu, g_cpu = run("cpu", logits, targets, tl, ul, **kw)
    c_gpu, g_gpu = run(DEV, logits, targets, tl, ul, **kw)
    torch.testing.assert_close(c_gpu, c_cpu, rtol=tol, atol=tol)
    torch.testing.assert_close(g_gpu.double(), g_cpu.double(), rtol=tol, atol=tol)
    return c_gpu, g_gpu


SHAPES = [(1, 1, 0, 1), (2, 1, 3, 5), (3, 4, 6, 8), (16, 5, 3, 4), (2, 3, 2, 5000),
          (4, 20, 8, 37), (3, 17, 5, 130)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-U{}-V{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [True, False])
def test_cpu_equals_cuda(shape, dtype, fused):
    logits, targets, tl, ul = make_batch(sum(shape), *shape, dtype=dtype)
    if not fused:
        logits = logits.log_softmax(-1)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_parity(logits, targets, tl, ul, tol, fused_log_softmax=fused)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [50, 257, 1000])
def test_half_precision(dtype, V):
    logits, targets, tl, ul = make_batch(V, 4, 9, 5, V, dtype=dtype)
    c, g = assert_parity(logits, targets, tl, ul, 1e-2)
    assert g.dtype == dtype and torch.isfinite(c).all()


def test_clamp_reduction_weights_and_misalignment():
    logits, targets, tl, ul = make_batch(1, 5, 8, 4, 33)
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25])
    assert_parity(logits, targets, tl, ul, 2e-5, clamp=0.02, weights=weights)
    assert_parity(logits, targets, tl, ul, 2e-5, offset=1)
    for reduction in ("sum", "mean"):
        out = [rnnt_loss(logits.to(d), targets.to(d), tl.to(d), ul.to(d), reduction=reduction)
               for d in ("cpu", DEV)]
        torch.testing.assert_close(out[1].cpu(), out[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_gradient(dtype):
    logits, targets, tl, ul = make_batch(2, 3, 10, 4, 300, dtype=dtype)
    _, g_ref = run(DEV, logits, targets, tl, ul)
    leaf = logits.to(DEV).requires_grad_()
    x = leaf * 1.0
    rnnt_loss(x, targets.to(DEV), tl.to(DEV), ul.to(DEV), inplace_grad=True).backward()
    torch.testing.assert_close(leaf.grad.cpu(), g_ref)
    torch.testing.assert_close(x.detach().cpu(), g_ref)


def test_inf_heavy_and_infeasible():
    logits, targets, tl, ul = make_batch(3, 4, 6, 3, 40)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(logits.shape, generator=g) < 0.7
    mask[..., 0] = False
    x = logits.masked_fill(mask, float("-inf"))
    x[0, 1, 1] = float("-inf")  # a row of -inf
    x[1, int(tl[1]) - 1, int(ul[1]), 0] = float("-inf")  # no final blank: infeasible
    c, gr = assert_parity(x, targets, tl, ul, 2e-5)
    assert torch.isinf(c[1]) and not torch.isnan(gr).any() and (gr[1] == 0).all()


def test_unvalidated_bad_values_give_nan():
    logits, targets, tl, ul = make_batch(4, 3, 4, 3, 6)
    tl[:], ul[:] = 4, 3
    tl[1] = 9
    targets[2, 0] = 0
    c = rnnt_loss(logits.to(DEV), targets.to(DEV), tl.to(DEV), ul.to(DEV), reduction="none",
                  validate=False)
    assert torch.isnan(c[1]) and torch.isnan(c[2]) and torch.isfinite(c[0])


@pytest.mark.parametrize("U", [2000, 5000, 9000])
def test_large_U(U):
    # S + 1 > 1024 puts several columns on each thread; 9000 also needs more than 48 KiB
    # of shared memory for the diagonal buffers.
    logits, targets, tl, ul = make_batch(U, 2, 6, U, 8)
    assert_parity(logits, targets, tl, ul, 1e-4)


def test_mutual_information_parity():
    g = torch.Generator().manual_seed(5)
    for N, S, T in [(3, 0, 5), (4, 7, 9), (2, 3000, 4)]:
        px = torch.randn(N, S, T + 1, generator=g, dtype=torch.float64)
        py = torch.randn(N, S + 1, T, generator=g, dtype=torch.float64)
        boundary = torch.tensor([[0, 0, S, T]] * N)
        boundary[-1] = torch.tensor([min(1, S), min(2, T), S, T])
        outs = []
        for d in ("cpu", DEV):
            a = px.to(d).requires_grad_()
            b = py.to(d).requires_grad_()
            ll = mutual_information_recursion(a, b, boundary.to(d))
            ll.sum().backward()
            outs.append((ll.detach().cpu(), a.grad.cpu(), b.grad.cpu()))
        for x, y in zip(*outs, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_pruned_parity():
    g = torch.Generator().manual_seed(6)
    N, T, U, V = 3, 12, 6, 20
    am = torch.randn(N, T, V, generator=g)
    lm = torch.randn(N, U + 1, V, generator=g)
    logits = torch.randn(N, T, 3, V, generator=g)
    y = torch.randint(1, V, (N, U), generator=g)
    tl, ul = torch.tensor([12, 9, 5]), torch.tensor([6, 4, 1])
    outs = []
    for d in ("cpu", DEV):
        _, (pxg, pyg) = rnnt_loss_simple(am.to(d), lm.to(d), y.to(d), tl.to(d), ul.to(d),
                                         return_grad=True)
        ranges = get_rnnt_prune_ranges(pxg, pyg, tl.to(d), ul.to(d), 3)
        x = logits.to(d).requires_grad_()
        c = rnnt_loss_pruned(x, y.to(d), ranges, tl.to(d), ul.to(d), reduction="none")
        c.sum().backward()
        outs.append((ranges.cpu(), c.detach().cpu(), x.grad.cpu()))
    assert torch.equal(outs[0][0], outs[1][0])
    for x, y_ in zip(outs[0][1:], outs[1][1:], strict=True):
        torch.testing.assert_close(x, y_, rtol=2e-5, atol=2e-5)


def test_current_stream_and_no_host_sync():
    logits, targets, tl, ul = make_batch(7, 4, 30, 10, 100)
    _, g_ref = run(DEV, logits, targets, tl, ul)
    side = torch.cuda.Stream()
    args = [t.to(DEV) for t in (logits, targets, tl, ul)]
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        x = args[0].clone().requires_grad_()
        torch.cuda.set_sync_debug_mode("error")
        try:
            rnnt_loss(x, *args[1:], validate=False, reduction="sum").backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    side.synchronize()
    torch.testing.assert_close(x.grad.cpu(), g_ref)


def test_more_than_2_to_the_31_elements():
    # Two utterances of ~1.08e9 logits each: the second lies beyond element 2^31, so its
    # cost and gradient are only right if every index is 64-bit. Check them against the
    # same utterance computed alone (whose indices all fit in 32 bits).
    N, T, U, V = 2, 256, 1024, 4100
    numel = N * T * (U + 1) * V
    assert numel > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * numel:  # bf16 logits + their gradient + a copy of utterance 1, with room
        pytest.skip("not enough GPU memory for the 2^31-element test")
    g = torch.Generator(device=DEV).manual_seed(0)
    logits = torch.randn(N, T, U + 1, V, device=DEV, dtype=torch.bfloat16, generator=g)
    targets = torch.randint(1, V, (N, U), device=DEV, generator=g)
    tl = torch.tensor([T, T - 3], device=DEV)
    ul = torch.tensor([U, U - 5], device=DEV)
    second = logits[1:].clone()
    x = logits.requires_grad_()
    cost = rnnt_loss(x, targets, tl, ul, reduction="none")
    cost.sum().backward()
    grad_tail = x.grad[1, -1, -1].float().cpu()
    grad_mid = x.grad[1, T // 2, U // 2].float().cpu()
    del x, logits
    torch.cuda.empty_cache()
    y = second.requires_grad_()
    alone = rnnt_loss(y, targets[1:], tl[1:], ul[1:], reduction="none")
    alone.sum().backward()
    torch.testing.assert_close(cost[1].detach().cpu(), alone[0].detach().cpu(), rtol=1e-5,
                               atol=1e-3)
    torch.testing.assert_close(grad_tail, y.grad[0, -1, -1].float().cpu())
    torch.testing.assert_close(grad_mid, y.grad[0, T // 2, U // 2].float().cpu())
    assert (grad_tail == 0).all()  # padding of utterance 1 (t >= T - 3)
    assert (grad_mid != 0).any()
