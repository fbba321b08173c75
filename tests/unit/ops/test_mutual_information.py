"""Mutual-information recursion: both backends against the float64 brute force."""

from __future__ import annotations

import pytest
import torch

from speechfm.ops import RNNTInputError, mutual_information_recursion
from speechfm.ops.rnnt_reference import mutual_information_reference


def lattice(seed, N, S, T, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(N, S, T + 1, generator=g, dtype=torch.float64).to(dtype)
    py = torch.randn(N, S + 1, T, generator=g, dtype=torch.float64).to(dtype)
    return px, py


def random_boundary(seed, N, S, T):
    g = torch.Generator().manual_seed(seed)
    sb = torch.randint(0, S + 1, (N,), generator=g)
    tb = torch.randint(0, T + 1, (N,), generator=g)
    se = sb + (torch.rand(N, generator=g) * (S - sb + 1)).long()
    te = tb + (torch.rand(N, generator=g) * (T - tb + 1)).long()
    b = torch.stack([sb, tb, se, te], 1)
    b[0] = torch.tensor([0, 0, S, T])
    return b


def grads(fn, px, py, *args, **kw):
    a = px.detach().clone().requires_grad_()
    b = py.detach().clone().requires_grad_()
    out = fn(a, b, *args, **kw)
    weights = torch.linspace(0.5, 2.0, out.numel(), dtype=out.dtype)
    if out.requires_grad:
        (out * weights).sum().backward()
    # Edges that no path uses (or empty tensors) have no gradient in the brute force.
    ga = a.grad if a.grad is not None else torch.zeros_like(a)
    gb = b.grad if b.grad is not None else torch.zeros_like(b)
    return out.detach(), ga, gb


@pytest.mark.parametrize("N,S,T", [(1, 0, 0), (2, 0, 4), (3, 3, 0), (5, 4, 6), (4, 9, 3)])
def test_matches_brute_force(backend, N, S, T):
    px, py = lattice(N + S + T, N, S, T)
    boundary = random_boundary(S * T, N, S, T)
    ref = grads(mutual_information_reference, px, py, boundary)
    out = grads(mutual_information_recursion, px, py, boundary, backend=backend)
    for x, y in zip(out, ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_default_boundary_and_float32(backend):
    px, py = lattice(1, 3, 5, 7, dtype=torch.float32)
    ref = grads(mutual_information_reference, px, py)
    out = grads(mutual_information_recursion, px, py, backend=backend)
    assert out[0].dtype == torch.float32
    for x, y in zip(out, ref, strict=True):
        torch.testing.assert_close(x.double(), y.double(), rtol=1e-5, atol=1e-5)


def test_gradcheck(extension):
    px, py = lattice(2, 2, 3, 4)
    boundary = torch.tensor([[0, 0, 3, 4], [1, 0, 2, 3]])
    a, b = px.clone().requires_grad_(), py.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, y: mutual_information_recursion(x, y, boundary, backend="extension"), (a, b))


def test_return_grad_gives_occupancies(backend):
    N, S, T = 3, 4, 6
    px, py = lattice(3, N, S, T)
    px[:, :, T] = float("-inf")  # the RNN-T lattice: no symbol after the last frame
    boundary = torch.tensor([[0, 0, 4, 6], [0, 0, 2, 5], [0, 0, 0, 3]])
    ll, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True,
                                                          backend=backend)
    ref_ll = mutual_information_reference(px, py, boundary)
    torch.testing.assert_close(ll, ref_ll)
    a, b = px.clone().requires_grad_(), py.clone().requires_grad_()
    mutual_information_reference(a, b, boundary).sum().backward()
    torch.testing.assert_close(px_grad, torch.nan_to_num(a.grad))
    torch.testing.assert_close(py_grad, b.grad)
    # Every path emits exactly one blank per frame: each frame's blank occupancies sum to 1.
    for n, te in enumerate(boundary[:, 3].tolist()):
        torch.testing.assert_close(py_grad[n, :, :te].sum(0), torch.ones(te, dtype=px.dtype))
    # The returned loglik stays differentiable and reuses the cached occupancies.
    a = px.clone().requires_grad_()
    ll, _ = mutual_information_recursion(a, py, boundary, return_grad=True, backend=backend)
    (2 * ll).sum().backward()
    torch.testing.assert_close(a.grad, 2 * px_grad)


def test_half_inputs_are_upcast(backend):
    px, py = lattice(5, 2, 3, 4, dtype=torch.bfloat16)
    out = mutual_information_recursion(px, py, backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), mutual_information_reference(px, py))


def test_invalid_inputs():
    px, py = lattice(6, 2, 3, 4)
    with pytest.raises(RNNTInputError, match="utterance 1: boundary"):
        mutual_information_recursion(px, py, torch.tensor([[0, 0, 3, 4], [0, 0, 4, 4]]))
    with pytest.raises(RNNTInputError, match="utterance 0: boundary"):
        mutual_information_recursion(px, py, torch.tensor([[2, 0, 1, 4], [0, 0, 3, 4]]))
    with pytest.raises(RNNTInputError, match=r"\(N, S, T \+ 1\)"):
        mutual_information_recursion(px[:, :, :-1], py)
    with pytest.raises(RNNTInputError, match="boundary must be"):
        mutual_information_recursion(px, py, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(RNNTInputError, match="integer"):
        mutual_information_recursion(px, py, torch.zeros(2, 4))
