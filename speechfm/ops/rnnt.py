"""RNN-T loss and the mutual-information recursion, on CUDA, CPU (C++) or pure PyTorch.

Public API::

    rnnt_loss(logits, targets, logit_lengths, target_lengths, *, blank=0, reduction="mean",
              clamp=0.0, fused_log_softmax=True, inplace_grad=False, validate=True,
              backend="auto") -> Tensor
    mutual_information_recursion(px, py, boundary=None, *, return_grad=False,
                                 validate=True, backend="auto") -> Tensor | (Tensor, (Tensor, Tensor))

Shapes: ``logits (N, T, U + 1, V)`` (joiner output for frame t after u labels),
``targets (N, U)``, ``logit_lengths (N,)`` (T_n frames), ``target_lengths (N,)``
(U_n labels). Padding (t >= T_n or u > U_n) is ignored and gets zero gradient.

How the loss is computed (the kernels live in ``cuda/rnnt``):

1. One pass over the logits, one row (n, t, u) at a time, computes the log-normaliser
   (online max / sum) and gathers only the blank and label log-probabilities into compact
   (N, T, U + 1) float32 tensors, laid out as the mutual-information lattice
   ``px (N, U, T + 1)`` / ``py (N, U + 1, T)``.
2. The alpha recursion (and, when a gradient is needed, the beta recursion, run
   concurrently) sweeps anti-diagonals of each utterance's lattice in float32.
3. The backward pass turns alpha and beta into edge occupancies and writes
   ``d cost / d logit = softmax * (occ_blank + occ_label) - onehot(blank) * occ_blank
   - onehot(label) * occ_label``, times the incoming gradient, once per element
   (optionally into the logits' own memory), zeros included.

``backend``: ``"auto"`` uses the compiled kernels (built on first use, see
:mod:`speechfm.ops._build`) and falls back to the pure-PyTorch implementation with a
warning if they cannot be built; ``"extension"`` requires the kernels; ``"torch"``
always uses :class:`speechfm.ops.rnnt_reference.TorchOps`.
"""

from __future__ import annotations

import warnings

import torch

from speechfm.errors import SpeechfmError
from speechfm.ops._build import KernelBuildError, load_rnnt_extension
from speechfm.ops.rnnt_reference import TorchOps

__all__ = ["RNNTInputError", "get_rnnt_ops", "mutual_information_recursion", "rnnt_loss"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_warned: set[str] = set()


class RNNTInputError(SpeechfmError, ValueError):
    """An input of an RNN-T op is unusable; the message names the tensor and utterance."""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def get_rnnt_ops(backend: str, device: torch.device):
    """The operator set for ``backend`` ("auto", "extension" or "torch") on ``device``."""
    if backend == "torch":
        return TorchOps
    if backend not in ("auto", "extension"):
        raise RNNTInputError(f"backend must be 'auto', 'extension' or 'torch', got {backend!r}")
    if device.type not in ("cpu", "cuda"):
        if backend == "extension":
            raise RNNTInputError(f"the RNN-T kernels run on cpu and cuda, not {device.type}")
        return TorchOps
    try:
        ext = load_rnnt_extension()
    except KernelBuildError as e:
        if backend == "extension":
            raise
        _warn_once("build", f"{e}; using the pure-PyTorch RNN-T implementation")
        return TorchOps
    if device.type == "cuda" and not ext.with_cuda:
        message = "the RNN-T kernels were built without CUDA " + (
            f"(their CUDA build failed: {ext.cuda_error})" if ext.cuda_error
            else "(no nvcc, or CUDA unavailable when they were built)")
        if backend == "extension":
            raise KernelBuildError(message)
        _warn_once("cuda", message + "; using the pure-PyTorch implementation on CUDA")
        return TorchOps
    return ext.ops


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------
def _check_int(t, name: str, dim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise RNNTInputError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise RNNTInputError(f"{name} must be an integer tensor, got {t.dtype}")
    if t.dim() != dim:
        raise RNNTInputError(f"{name} must have {dim} dimension(s), got shape {tuple(t.shape)}")


def _check_same_device(ref: torch.Tensor, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.device != ref.device:
            raise RNNTInputError(f"{name} is on {t.device} but px is on {ref.device}")


def _first_bad(mask: torch.Tensor) -> int | None:
    if mask.numel() == 0:  # an empty batch has no bad utterance
        return None
    idx = torch.nonzero(mask.reshape(mask.size(0), -1).any(1))
    return int(idx[0]) if idx.numel() else None


def check_logits(logits, what: str = "logits", dims: int = 4) -> None:
    """Checks that ``logits`` is a floating tensor with ``dims`` dimensions."""
    if not isinstance(logits, torch.Tensor) or logits.dtype not in _FLOAT_DTYPES:
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise RNNTInputError(f"{what} must be a float32/float64/float16/bfloat16 tensor, got {got}")
    if logits.dim() != dims:
        raise RNNTInputError(f"{what} must have {dims} dimensions, got shape {tuple(logits.shape)}")


def check_targets_and_lengths(targets, logit_lengths, target_lengths, *, N: int, T: int, V: int,
                              blank: int, device: torch.device, what: str = "logits") -> int:
    """Checks the targets and lengths of an RNN-T batch; returns ``blank`` as an index in [0, V).

    Raises :class:`RNNTInputError` naming the tensor and, for bad values, the utterance.
    On CUDA the value checks cost one device-to-host copy of the lengths and targets.
    """
    _check_int(targets, "targets", 2)
    _check_int(logit_lengths, "logit_lengths", 1)
    _check_int(target_lengths, "target_lengths", 1)
    for name, t in (("targets", targets), ("logit_lengths", logit_lengths),
                    ("target_lengths", target_lengths)):
        if t.device != device:
            raise RNNTInputError(f"{name} is on {t.device} but {what} is on {device}")
    U = targets.size(1)
    if targets.size(0) != N or logit_lengths.size(0) != N or target_lengths.size(0) != N:
        raise RNNTInputError(
            f"batch sizes differ: {what} {N}, targets {targets.size(0)}, logit_lengths "
            f"{logit_lengths.size(0)}, target_lengths {target_lengths.size(0)}")
    if V < 1:
        raise RNNTInputError(f"{what} has an empty vocabulary (V = 0)")
    if not -V <= blank < V:
        raise RNNTInputError(f"blank = {blank} is outside the vocabulary of size V = {V}")
    blank = blank % V
    Tn = logit_lengths.long().cpu()
    Un = target_lengths.long().cpu()
    n = _first_bad((Tn < 1) | (Tn > T))
    if n is not None:
        raise RNNTInputError(f"utterance {n}: logit_lengths is {int(Tn[n])}, outside [1, {T}] "
                             f"({what} has T = {T} frames)")
    n = _first_bad((Un < 0) | (Un > U))
    if n is not None:
        raise RNNTInputError(f"utterance {n}: target_lengths is {int(Un[n])}, outside [0, {U}] "
                             f"(targets has {U} columns)")
    if U > 0:
        y = targets.long().cpu()
        used = torch.arange(U).view(1, U) < Un.view(N, 1)
        n = _first_bad(used & (y == blank))
        if n is not None:
            u = int(torch.nonzero(used[n] & (y[n] == blank))[0])
            raise RNNTInputError(f"utterance {n}: target {u} equals the blank id {blank}")
        n = _first_bad(used & ((y < 0) | (y >= V)))
        if n is not None:
            u = int(torch.nonzero(used[n] & ((y[n] < 0) | (y[n] >= V)))[0])
            raise RNNTInputError(f"utterance {n}: target {u} is {int(y[n, u])}, outside the "
                                 f"vocabulary [0, {V})")
    return blank


def reduce_costs(costs: torch.Tensor, reduction: str) -> torch.Tensor:
    """Applies reduction "none", "sum" or "mean" (over the batch) to per-utterance costs."""
    if reduction == "none":
        return costs
    if reduction == "sum":
        return costs.sum()
    if reduction == "mean":
        return costs.mean()
    raise RNNTInputError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


# --------------------------------------------------------------------------------------
# Full RNN-T loss
# --------------------------------------------------------------------------------------
class _RNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused,
                inplace, ops):
        N, T, J, _ = logits.shape
        U = J - 1
        acc = acc_dtype(logits.dtype)
        opts = {"dtype": acc, "device": logits.device}
        px = torch.full((N, U, T + 1), float("-inf"), **opts)
        py = torch.full((N, U + 1, T), float("-inf"), **opts)
        denom = ops.rnnt_row_logprobs(logits, targets, target_lengths, logit_lengths, None,
                                      blank, fused, py.transpose(1, 2),
                                      px.transpose(1, 2)[:, :T])
        zeros = torch.zeros_like(logit_lengths)
        boundary = torch.stack([zeros, zeros, target_lengths, logit_lengths], dim=1).contiguous()
        need_grad = ctx.needs_input_grad[0]
        alpha, loglik, beta = ops.mutual_information_forward(px, py, boundary, need_grad)
        if need_grad:
            ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, px, py,
                                  boundary, alpha, beta, loglik, denom)
            ctx.config = (blank, clamp, fused, inplace, ops)
        return -loglik

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_costs):
        (logits, targets, logit_lengths, target_lengths, px, py, boundary, alpha, beta, loglik,
         denom) = ctx.saved_tensors
        blank, clamp, fused, inplace, ops = ctx.config
        T = logits.size(1)
        occ_px, occ_py = ops.mutual_information_backward(px, py, boundary, alpha, beta, loglik,
                                                         None)
        grad = logits if inplace else torch.empty_like(logits)
        scale = grad_costs.to(loglik.dtype).contiguous()
        ops.rnnt_logits_grad(logits, denom, targets, target_lengths, logit_lengths, None,
                             occ_py.transpose(1, 2), occ_px.transpose(1, 2)[:, :T], scale, blank,
                             float(clamp), fused, grad)
        return grad, None, None, None, None, None, None, None, None


def has_fused_cpu_loss(ops) -> bool:
    """Whether ``ops`` has the fused CPU loss (the compiled library; not TorchOps)."""
    return ops is not TorchOps and hasattr(ops, "rnnt_loss_cpu")


class _RNNTLossCPU(torch.autograd.Function):
    """Full or pruned (``ranges`` given) RNN-T loss on the CPU in two library calls.

    The forward call does the row pass and the lattice (alpha, and with a gradient beta
    and the edge occupancies of every row); for fused float32 / float64 logits it also
    keeps the softmax of every row in a buffer the size of the logits, which the
    backward call turns into the gradient in place (no second exp over the logits). With
    ``inplace`` the buffer is not made and the gradient is recomputed into the logits.
    """

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, ranges, blank, clamp, fused,
                inplace, ops):
        need_grad = ctx.needs_input_grad[0]
        cache = need_grad and fused and not inplace
        costs, denom, occ_blank, occ_label, probs = ops.rnnt_loss_cpu(
            logits, targets, target_lengths, logit_lengths, ranges, blank, fused, need_grad,
            cache)
        if need_grad:
            ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, ranges, denom,
                                  occ_blank, occ_label)
            ctx.probs = probs if probs.numel() else None
            ctx.cached = ctx.probs is not None
            ctx.config = (blank, clamp, fused, inplace, ops)
        return costs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_costs):
        (logits, targets, logit_lengths, target_lengths, ranges, denom, occ_blank,
         occ_label) = ctx.saved_tensors
        blank, clamp, fused, inplace, ops = ctx.config
        # The softmax buffer becomes the gradient. A second backward (retain_graph)
        # regenerates it by the same computation, so that it gives the same bits.
        probs, ctx.probs = ctx.probs, None
        if probs is None and fused and not inplace and ctx.cached:
            probs = ops.rnnt_loss_cpu(logits, targets, target_lengths, logit_lengths, ranges,
                                      blank, fused, True, True)[4]
        if probs is not None:
            grad = probs
        else:
            grad = logits if inplace else torch.empty_like(logits)
        scale = grad_costs.to(denom.dtype).contiguous()
        ops.rnnt_loss_cpu_backward(logits, denom, targets, target_lengths, logit_lengths, ranges,
                                   occ_blank, occ_label, scale, blank, float(clamp), fused,
                                   probs is not None, grad)
        return grad, None, None, None, None, None, None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    blank: int = 0,
    reduction: str = "mean",
    clamp: float = 0.0,
    fused_log_softmax: bool = True,
    inplace_grad: bool = False,
    validate: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """RNN-T loss (negative log-likelihood of the targets) of a batch.

    Args:
        logits: (N, T, U + 1, V) joiner outputs, float32, float16, bfloat16 or float64.
            Arithmetic is float32 (float64 for float64 inputs). Must be finite or -inf.
        targets: (N, U) label ids (any integer dtype); entries past target_lengths are
            ignored.
        logit_lengths: (N,) frames per utterance, 1 <= T_n <= T.
        target_lengths: (N,) labels per utterance, 0 <= U_n <= U.
        blank: blank id (negative counts from the end of the vocabulary). No target may
            equal it.
        reduction: "none" (per-utterance costs (N,)), "sum", or "mean" (over the batch).
        clamp: if > 0, each element of d cost_n / d logits is clamped to [-clamp, clamp]
            before it is multiplied by the incoming gradient.
        fused_log_softmax: True: logits are unnormalised and log_softmax over V is part of
            the loss. False: logits already are log-probabilities; the gradient is then
            nonzero only at the blank and label entries.
        inplace_grad: write the gradient into the logits' memory instead of a new tensor
            (saves one (N, T, U + 1, V) buffer). Only when nothing else needs the logits
            after the loss (e.g. they come straight out of a Linear layer); the logits
            hold the gradient after backward.
        validate: check lengths and labels and raise :class:`RNNTInputError` naming the
            utterance. On CUDA this costs one device-to-host copy; without it, an
            utterance with impossible values gets a NaN cost (memory is never accessed
            out of bounds).
        backend: "auto", "extension" or "torch" (see the module docstring).

    Returns:
        The costs (N,) for reduction="none", else a scalar; float32 (float64 for float64
        logits). An utterance with no path of nonzero probability costs inf and has a
        zero gradient.
    """
    if validate:
        check_logits(logits)
        N, T, _, V = logits.shape
        _check_int(targets, "targets", 2)
        if logits.size(2) != targets.size(1) + 1:
            raise RNNTInputError(
                f"logits must have U + 1 = {targets.size(1) + 1} symbol positions for targets "
                f"of {targets.size(1)} columns, got shape {tuple(logits.shape)}")
        blank = check_targets_and_lengths(targets, logit_lengths, target_lengths, N=N, T=T, V=V,
                                          blank=blank, device=logits.device)
    elif blank < 0:
        blank = blank % logits.size(-1)
    if reduction not in ("none", "sum", "mean"):
        raise RNNTInputError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    ops = get_rnnt_ops(backend, logits.device)
    args = (logits.contiguous(), targets, logit_lengths.long(), target_lengths.long())
    config = (int(blank), float(clamp), bool(fused_log_softmax), bool(inplace_grad), ops)
    if logits.device.type == "cpu" and has_fused_cpu_loss(ops):
        costs = _RNNTLossCPU.apply(*args, None, *config)
    else:
        costs = _RNNTLoss.apply(*args, *config)
    return reduce_costs(costs, reduction)


# --------------------------------------------------------------------------------------
# Mutual-information recursion
# --------------------------------------------------------------------------------------
class _MutualInformation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, px, py, boundary, return_grad, ops):
        need_grad = return_grad or ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        alpha, loglik, beta = ops.mutual_information_forward(px, py, boundary, need_grad)
        ctx.ops = ops
        if return_grad:
            px_grad, py_grad = ops.mutual_information_backward(px, py, boundary, alpha, beta,
                                                               loglik, None)
            ctx.save_for_backward(px_grad, py_grad)
            ctx.cached = True
            ctx.mark_non_differentiable(px_grad, py_grad)
            return loglik, px_grad, py_grad
        ctx.cached = False
        if need_grad:
            ctx.save_for_backward(px, py, boundary, alpha, beta, loglik)
        return loglik

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loglik, *unused):
        if ctx.cached:
            px_grad, py_grad = ctx.saved_tensors
            g = grad_loglik.to(px_grad.dtype).view(-1, 1, 1)
            return px_grad * g, py_grad * g, None, None, None
        px, py, boundary, alpha, beta, loglik = ctx.saved_tensors
        scale = grad_loglik.to(loglik.dtype).contiguous()
        px_grad, py_grad = ctx.ops.mutual_information_backward(px, py, boundary, alpha, beta,
                                                               loglik, scale)
        return px_grad, py_grad, None, None, None


def mutual_information_recursion(
    px: torch.Tensor,
    py: torch.Tensor,
    boundary: torch.Tensor | None = None,
    *,
    return_grad: bool = False,
    validate: bool = True,
    backend: str = "auto",
):
    """Log-likelihood of the RNN-T style lattice given by its edge log-weights.

    ``alpha[s, t] = logaddexp(alpha[s - 1, t] + px[s - 1, t], alpha[s, t - 1] + py[s, t - 1])``
    with ``alpha[s_begin, t_begin] = 0``; the result is ``alpha[s_end, t_end]``. For the
    standard RNN-T lattice, ``px[n, :, t_end]`` must be -inf (no symbol after the last
    frame); the losses in this package arrange that.

    Args:
        px: (N, S, T + 1) symbol-edge log-weights, float32 or float64 (float16 / bfloat16
            are computed in float32).
        py: (N, S + 1, T) blank-edge log-weights, same dtype.
        boundary: (N, 4) integer [s_begin, t_begin, s_end, t_end]; default [0, 0, S, T].
        return_grad: also return the occupancies (d loglik / d px, d loglik / d py),
            detached, e.g. for :func:`speechfm.ops.pruned_rnnt.get_rnnt_prune_ranges`.
        validate: check the boundary values (one device-to-host copy on CUDA).
        backend: "auto", "extension" or "torch".

    Returns:
        loglik (N,), or (loglik, (px_grad, py_grad)) with return_grad. Differentiable.
    """
    if px.dim() != 3 or py.dim() != 3:
        raise RNNTInputError(f"px and py must be 3-D, got shapes {tuple(px.shape)} and "
                             f"{tuple(py.shape)}")
    N, S, T1 = px.shape
    T = py.size(2)
    if T1 != T + 1 or py.size(0) != N or py.size(1) != S + 1:
        raise RNNTInputError(f"px must be (N, S, T + 1) and py (N, S + 1, T), got "
                             f"{tuple(px.shape)} and {tuple(py.shape)}")
    if not (px.dtype.is_floating_point and py.dtype.is_floating_point):
        raise RNNTInputError(f"px and py must be floating point, got {px.dtype} and {py.dtype}")
    _check_same_device(px, py=py)
    dtype = torch.float64 if torch.float64 in (px.dtype, py.dtype) else torch.float32
    if boundary is None:
        boundary = torch.tensor([0, 0, S, T], device=px.device).expand(N, 4)
    else:
        _check_int(boundary, "boundary", 2)
        _check_same_device(px, boundary=boundary)
        if boundary.shape != (N, 4):
            raise RNNTInputError(f"boundary must be (N, 4) = ({N}, 4), got {tuple(boundary.shape)}")
        if validate:
            b = boundary.long().cpu()
            sb, tb, se, te = b.unbind(1)
            bad = (sb < 0) | (sb > se) | (se > S) | (tb < 0) | (tb > te) | (te > T)
            n = _first_bad(bad)
            if n is not None:
                raise RNNTInputError(
                    f"utterance {n}: boundary {b[n].tolist()} is not within 0 <= s_begin <= "
                    f"s_end <= {S}, 0 <= t_begin <= t_end <= {T}")
    boundary = boundary.long().contiguous()
    ops = get_rnnt_ops(backend, px.device)
    px = px.to(dtype)
    py = py.to(dtype)
    if px.stride(-1) != 1 or (px.size(1) > 1 and px.stride(1) != T + 1):
        px = px.contiguous()
    if py.stride(-1) != 1 or (py.size(1) > 1 and py.stride(1) != T):
        py = py.contiguous()
    out = _MutualInformation.apply(px, py, boundary, bool(return_grad), ops)
    if return_grad:
        loglik, px_grad, py_grad = out
        return loglik, (px_grad, py_grad)
    return out
