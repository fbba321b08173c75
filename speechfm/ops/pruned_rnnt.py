"""Pruned RNN-T: the full loss evaluated only on a narrow band of the lattice.

The algorithm of Kuang et al. (2022), "Pruned RNN-T for fast, memory-efficient ASR
training", implemented for speechfm:

1. A cheap "simple" joiner ``logit[t, u, v] = am[t, v] + lm[u, v]`` (encoder and
   predictor projected to the vocabulary) gives a full-lattice loss with O(N T U)
   memory: its log-normaliser is a batched matrix product, so the (N, T, U + 1, V)
   tensor never exists. Its gradients with respect to the lattice edges (the edge
   occupancies) say where the probability mass lies.
2. For every frame, :func:`get_rnnt_prune_ranges` picks ``s_range`` consecutive symbol
   positions holding most of that mass, subject to the constraints that keep a complete
   path inside the band (non-decreasing starts, steps of at most ``s_range - 1``, start at
   0 and end at U_n).
3. :func:`do_rnnt_pruning` gathers the encoder / predictor activations of those positions;
   the user's joiner turns them into pruned logits (N, T, R, V).
4. :func:`rnnt_loss_pruned` is the exact RNN-T loss over the pruned lattice (same kernels
   as :func:`speechfm.ops.rnnt.rnnt_loss`, with the mutual-information recursion over the
   scattered log-probs).

A training step::

    simple, (px_grad, py_grad) = rnnt_loss_smoothed(
        am, lm, y, x_lens, y_lens, lm_only_scale=0.25, am_only_scale=0.0, return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, x_lens, y_lens, s_range=5)
    enc_p, pred_p = do_rnnt_pruning(enc, pred, ranges)     # (N, T, R, C) each
    pruned = rnnt_loss_pruned(joiner(enc_p, pred_p), y, ranges, x_lens, y_lens)
    loss = 0.5 * simple + pruned

Shapes: am (N, T, V), lm (N, U + 1, V), targets (N, U), logit_lengths (N,) = T_n,
target_lengths (N,) = U_n, ranges (N, T, R) int64.
"""

from __future__ import annotations

import torch

from speechfm.ops.rnnt import (
    RNNTInputError,
    _RNNTLossCPU,
    acc_dtype,
    check_logits,
    check_targets_and_lengths,
    get_rnnt_ops,
    has_fused_cpu_loss,
    mutual_information_recursion,
    reduce_costs,
)

__all__ = [
    "do_rnnt_pruning",
    "get_rnnt_prune_ranges",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
]

NEG_INF = float("-inf")


def _boundary(logit_lengths: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    zeros = torch.zeros_like(logit_lengths, dtype=torch.long)
    return torch.stack([zeros, zeros, target_lengths.long(), logit_lengths.long()], 1)


class _SimpleLossCPU(torch.autograd.Function):
    """The simple / smoothed loss on the CPU in two library calls (cuda/rnnt/simple_cpu.cpp).

    The forward call returns the costs and the edge occupancies (the ``return_grad``
    output); the backward call turns the occupancies into d cost / d am and d cost / d lm
    in closed form (two GEMMs), instead of autograd through ~25 tensor operations.
    """

    @staticmethod
    def forward(ctx, am, lm, targets, logit_lengths, target_lengths, blank, lm_only_scale,
                am_only_scale, return_grad, ops):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        (costs, occ_x, occ_y, e_am, e_lm, s_am, s_lm, prod) = ops.rnnt_simple_cpu(
            am, lm, targets, target_lengths, logit_lengths, blank, lm_only_scale, am_only_scale,
            need_grad or return_grad)
        if need_grad:
            ctx.save_for_backward(e_am, e_lm, s_am, s_lm, prod, occ_x, occ_y, targets)
            ctx.config = (blank, lm_only_scale, am_only_scale, ops)
        ctx.mark_non_differentiable(occ_x, occ_y)
        return costs, occ_x, occ_y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_costs, *unused):
        e_am, e_lm, s_am, s_lm, prod, occ_x, occ_y, targets = ctx.saved_tensors
        blank, lm_only_scale, am_only_scale, ops = ctx.config
        grad_am, grad_lm = ops.rnnt_simple_cpu_backward(
            e_am, e_lm, s_am, s_lm, prod, occ_x, occ_y, targets, grad_costs, blank,
            lm_only_scale, am_only_scale)
        return grad_am, grad_lm, None, None, None, None, None, None, None, None


def rnnt_loss_smoothed(
    am: torch.Tensor,
    lm: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    blank: int = 0,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    validate: bool = True,
    backend: str = "auto",
):
    """RNN-T loss of the simple additive joiner, optionally smoothed.

    The lattice log-probs are an interpolation of three models::

        (1 - lm_only_scale - am_only_scale) * log_softmax_v(am[t] + lm[u])
            + lm_only_scale * log_softmax_v(lm[u]) + am_only_scale * log_softmax_v(am[t])

    taken at the blank and at the next label. Computed in float32 (float64 for float64
    inputs) with autocast disabled; memory is O(N T U + N (T + U) V).

    Args:
        am: (N, T, V) encoder output projected to the vocabulary.
        lm: (N, U + 1, V) predictor output projected to the vocabulary.
        targets: (N, U). logit_lengths: (N,) = T_n. target_lengths: (N,) = U_n.
        blank: blank id.
        lm_only_scale, am_only_scale: smoothing weights (0 gives the simple loss).
        reduction: "none", "sum" or "mean" (over the batch).
        return_grad: also return the edge occupancies (px_grad (N, U, T + 1),
            py_grad (N, U + 1, T)) for :func:`get_rnnt_prune_ranges`.
        validate: check lengths and labels (one device-to-host copy on CUDA).
        backend: "auto", "extension" or "torch" (see :mod:`speechfm.ops.rnnt`).

    Returns:
        The loss, or (loss, (px_grad, py_grad)) with return_grad.
    """
    check_logits(am, "am", 3)
    check_logits(lm, "lm", 3)
    N, T, V = am.shape
    U = lm.size(1) - 1
    if lm.size(0) != N or lm.size(2) != V:
        raise RNNTInputError(f"am (N, T, V) and lm (N, U + 1, V) disagree: {tuple(am.shape)} "
                             f"and {tuple(lm.shape)}")
    if targets.dim() != 2 or targets.size(1) != U:
        raise RNNTInputError(f"targets must be (N, U) = ({N}, {U}) for lm of shape "
                             f"{tuple(lm.shape)}, got {tuple(targets.shape)}")
    if lm_only_scale < 0 or am_only_scale < 0 or lm_only_scale + am_only_scale > 1:
        raise RNNTInputError("lm_only_scale and am_only_scale must be >= 0 with a sum <= 1, got "
                             f"{lm_only_scale} and {am_only_scale}")
    if validate:
        blank = check_targets_and_lengths(targets, logit_lengths, target_lengths, N=N, T=T, V=V,
                                          blank=blank, device=am.device, what="am")
    blank = blank % V
    acc = acc_dtype(am.dtype if am.dtype == torch.float64 else lm.dtype)
    ops = get_rnnt_ops(backend, am.device)
    if am.device.type == "cpu" and has_fused_cpu_loss(ops):
        with torch.autocast(device_type="cpu", enabled=False):
            costs, px_grad, py_grad = _SimpleLossCPU.apply(
                am.to(acc).contiguous(), lm.to(acc).contiguous(), targets, logit_lengths.long(),
                target_lengths.long(), blank, float(lm_only_scale), float(am_only_scale),
                bool(return_grad), ops)
        if return_grad:
            return reduce_costs(costs, reduction), (px_grad, py_grad)
        return reduce_costs(costs, reduction)
    with torch.autocast(device_type=am.device.type, enabled=False):
        am = am.to(acc)
        lm = lm.to(acc)
        # log sum_v exp(am[t, v] + lm[u, v]) through one batched matrix product of the
        # exponentials, each shifted by its row maximum to stay in range.
        am_max = am.amax(-1, keepdim=True).detach()
        lm_max = lm.amax(-1, keepdim=True).detach()
        prod = torch.bmm((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2))
        norm = prod.clamp_min(torch.finfo(acc).tiny).log() + lm_max + am_max.transpose(1, 2)
        y = targets.long().clamp(0, V - 1)  # padding may hold anything; it is masked below
        lm_y = lm[:, :U].gather(2, y.unsqueeze(2)).squeeze(2)  # (N, U)
        am_y = am.gather(2, y.unsqueeze(1).expand(N, T, U)).transpose(1, 2)  # (N, U, T)
        px = am_y + lm_y.unsqueeze(2) - norm[:, :U]  # (N, U, T)
        py = am[:, :, blank].unsqueeze(1) + lm[:, :, blank].unsqueeze(2) - norm  # (N, U+1, T)
        if lm_only_scale > 0 or am_only_scale > 0:
            keep = 1.0 - lm_only_scale - am_only_scale
            lm_lp = lm.log_softmax(-1)
            am_lp = am.log_softmax(-1)
            px_lm = lm_lp[:, :U].gather(2, y.unsqueeze(2))  # (N, U, 1)
            px_am = am_lp.gather(2, y.unsqueeze(1).expand(N, T, U)).transpose(1, 2)
            px = keep * px + lm_only_scale * px_lm + am_only_scale * px_am
            py = (keep * py + lm_only_scale * lm_lp[:, :, blank].unsqueeze(2)
                  + am_only_scale * am_lp[:, :, blank].unsqueeze(1))
        # No symbol may be emitted at or after t = T_n (the column t = T_n of px is the
        # lattice's last column for utterance n).
        t_idx = torch.arange(T + 1, device=am.device).view(1, 1, T + 1)
        px = torch.cat([px, px.new_full((N, U, 1), NEG_INF)], dim=2)
        px = px.masked_fill(t_idx >= logit_lengths.view(N, 1, 1), NEG_INF)
        out = mutual_information_recursion(px, py, _boundary(logit_lengths, target_lengths),
                                           return_grad=return_grad, validate=False,
                                           backend=backend)
    if return_grad:
        loglik, grads = out
        return reduce_costs(-loglik, reduction), grads
    return reduce_costs(-out, reduction)


def rnnt_loss_simple(am, lm, targets, logit_lengths, target_lengths, *, blank=0,
                     reduction="mean", return_grad=False, validate=True, backend="auto"):
    """:func:`rnnt_loss_smoothed` without smoothing (the simple additive joiner's loss)."""
    return rnnt_loss_smoothed(am, lm, targets, logit_lengths, target_lengths, blank=blank,
                              reduction=reduction, return_grad=return_grad, validate=validate,
                              backend=backend)


def _reverse_cummin(x: torch.Tensor) -> torch.Tensor:
    """out[..., t] = min(x[..., t:]), the largest non-decreasing sequence <= x."""
    return x.flip(-1).cummin(-1).values.flip(-1)


@torch.no_grad()
def get_rnnt_prune_ranges(
    px_grad: torch.Tensor,
    py_grad: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    s_range: int,
) -> torch.Tensor:
    """Per-frame windows of ``s_range`` consecutive symbol positions to keep.

    For frame t and window start b the score is the probability that the path's part in
    frame t lies in [b, b + R): the blank occupancies summed over the window, minus the
    occupancy of the symbol edge entering it from b - 1 in the same frame. The best start
    of each frame is then projected onto the constraints under which a complete path fits
    in the band: start 0 at t = 0, non-decreasing, steps of at most R - 1 between frames,
    and the window of frame T_n - 1 ending at U_n. (An utterance with U_n > (R - 1) T_n
    cannot fit; its pruned loss is inf.)

    Args:
        px_grad: (N, U, T + 1) symbol-edge occupancies (from ``return_grad``).
        py_grad: (N, U + 1, T) blank-edge occupancies.
        logit_lengths: (N,) = T_n. target_lengths: (N,) = U_n.
        s_range: window size; clipped to U + 1. At least 2 unless U = 0.

    Returns:
        ranges (N, T, R) int64, R = min(s_range, U + 1): ranges[n, t] = b_t + [0, R).
    """
    N, U, T1 = px_grad.shape
    T = T1 - 1
    if py_grad.shape != (N, U + 1, T):
        raise RNNTInputError(f"px_grad (N, U, T + 1) and py_grad (N, U + 1, T) disagree: "
                             f"{tuple(px_grad.shape)} and {tuple(py_grad.shape)}")
    if s_range < 1 or (U > 0 and s_range < 2):
        raise RNNTInputError(f"s_range must be >= 2 (no path survives a narrower band), got "
                             f"{s_range}")
    R = min(s_range, U + 1)
    dev = px_grad.device
    pyg = py_grad.float()
    window = pyg.unfold(1, R, 1).sum(-1)  # (N, U + 2 - R, T): mass of [b, b + R)
    enter = torch.cat([pyg.new_zeros(N, 1, T), px_grad[:, : U + 1 - R, :T].float()], dim=1)
    begin = (window - enter).argmax(1)  # (N, T)
    last = (target_lengths.long().to(dev) - R + 1).clamp_min(0).view(N, 1)
    t = torch.arange(T, device=dev).view(1, T)
    begin = torch.minimum(begin, last)
    begin = torch.where(t >= logit_lengths.long().to(dev).view(N, 1) - 1, last, begin)
    begin = _reverse_cummin(begin)
    # Steps of at most R - 1 <=> z[t] = (R - 1) t - begin[t] is non-decreasing; z >= 0
    # gives begin[0] = 0. Lowering z raises begin, which keeps it non-decreasing.
    z = (R - 1) * t - begin
    z = _reverse_cummin(z).clamp_min(0)
    begin = (R - 1) * t - z
    return begin.unsqueeze(2) + torch.arange(R, device=dev)


def do_rnnt_pruning(am: torch.Tensor, lm: torch.Tensor,
                    ranges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder and predictor activations at the kept lattice cells.

    Args:
        am: (N, T, C) encoder activations (joiner input).
        lm: (N, U + 1, C) predictor activations (joiner input).
        ranges: (N, T, R) from :func:`get_rnnt_prune_ranges`.

    Returns:
        (am_pruned, lm_pruned), each (N, T, R, C); am_pruned is an expanded view. The
        backward of lm_pruned accumulates into (N, U + 1, C), never (N, T, U + 1, C).
    """
    N, T, R = ranges.shape
    C = lm.size(2)
    if am.shape[:2] != (N, T) or lm.size(0) != N or am.size(2) != C:
        raise RNNTInputError(f"am (N, T, C), lm (N, U + 1, C) and ranges (N, T, R) disagree: "
                             f"{tuple(am.shape)}, {tuple(lm.shape)}, {tuple(ranges.shape)}")
    am_pruned = am.unsqueeze(2).expand(N, T, R, C)
    index = ranges.long().reshape(N, T * R, 1).expand(N, T * R, C)
    lm_pruned = torch.gather(lm, 1, index).view(N, T, R, C)
    return am_pruned, lm_pruned


class _PrunedRNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ranges, logit_lengths, target_lengths, blank, clamp, fused,
                inplace, ops):
        N, T, R, _ = logits.shape
        U = targets.size(1)
        acc = acc_dtype(logits.dtype)
        opts = {"dtype": acc, "device": logits.device}
        lp_blank = torch.full((N, T, R), NEG_INF, **opts)
        lp_label = torch.full((N, T, R), NEG_INF, **opts)
        denom = ops.rnnt_row_logprobs(logits, targets, target_lengths, logit_lengths, ranges,
                                      blank, fused, lp_blank, lp_label)
        # Scatter the rows into the full (s, t) lattice; cells outside the band stay -inf.
        t_idx = torch.arange(T, device=logits.device).view(1, T, 1)
        s_idx = ranges.clamp(0, U)
        flat_py = (s_idx * T + t_idx).reshape(N, T * R)
        flat_px = (s_idx * (T + 1) + t_idx).reshape(N, T * R)
        py = torch.full((N, U + 1, T), NEG_INF, **opts)
        py.view(N, -1).scatter_(1, flat_py, lp_blank.view(N, -1))
        px_buf = torch.full((N, U + 1, T + 1), NEG_INF, **opts)
        px_buf.view(N, -1).scatter_(1, flat_px, lp_label.view(N, -1))
        px = px_buf[:, :U]  # row s = U never carries a label
        boundary = _boundary(logit_lengths, target_lengths).contiguous()
        need_grad = ctx.needs_input_grad[0]
        alpha, loglik, beta = ops.mutual_information_forward(px, py, boundary, need_grad)
        if need_grad:
            ctx.save_for_backward(logits, targets, ranges, logit_lengths, target_lengths, px, py,
                                  boundary, alpha, beta, loglik, denom)
            ctx.config = (blank, clamp, fused, inplace, ops)
        return -loglik

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_costs):
        (logits, targets, ranges, logit_lengths, target_lengths, px, py, boundary, alpha, beta,
         loglik, denom) = ctx.saved_tensors
        blank, clamp, fused, inplace, ops = ctx.config
        N, T, R, _ = logits.shape
        U = targets.size(1)
        occ_px, occ_py = ops.mutual_information_backward(px, py, boundary, alpha, beta, loglik,
                                                         None)
        t_idx = torch.arange(T, device=logits.device).view(1, T, 1)
        s_idx = ranges.clamp(0, U)
        occ_blank = occ_py.reshape(N, -1).gather(1, (s_idx * T + t_idx).reshape(N, T * R))
        if U > 0:
            flat = (s_idx.clamp(max=U - 1) * (T + 1) + t_idx).reshape(N, T * R)
            occ_label = occ_px.reshape(N, -1).gather(1, flat)
        else:  # no labels at all: the label occupancies are never read
            occ_label = occ_blank.new_zeros(N, T * R)
        grad = logits if inplace else torch.empty_like(logits)
        scale = grad_costs.to(loglik.dtype).contiguous()
        ops.rnnt_logits_grad(logits, denom, targets, target_lengths, logit_lengths, ranges,
                             occ_blank.view(N, T, R), occ_label.view(N, T, R), scale, blank,
                             float(clamp), fused, grad)
        return grad, None, None, None, None, None, None, None, None, None


def rnnt_loss_pruned(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ranges: torch.Tensor,
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
    """RNN-T loss over the pruned lattice.

    Row (t, r) of the logits is symbol position ``ranges[n, t, r]``. With ranges covering
    all of 0..U at every frame (s_range >= U + 1) this equals
    :func:`speechfm.ops.rnnt.rnnt_loss`.

    Args:
        logits: (N, T, R, V) joiner outputs at the kept cells.
        targets: (N, U). ranges: (N, T, R) consecutive positions in [0, U] per frame.
        logit_lengths: (N,) = T_n. target_lengths: (N,) = U_n.
        Other arguments: as :func:`speechfm.ops.rnnt.rnnt_loss`.

    Returns:
        Costs (N,) for reduction="none", else a scalar (inf for an utterance whose band
        holds no complete path).
    """
    if validate:
        check_logits(logits)
        N, T, R, V = logits.shape
        blank = check_targets_and_lengths(targets, logit_lengths, target_lengths, N=N, T=T, V=V,
                                          blank=blank, device=logits.device)
        if not isinstance(ranges, torch.Tensor) or ranges.shape != (N, T, R):
            got = tuple(ranges.shape) if isinstance(ranges, torch.Tensor) else type(ranges).__name__
            raise RNNTInputError(f"ranges must be (N, T, R) = ({N}, {T}, {R}), got {got}")
        if ranges.dtype.is_floating_point or ranges.device != logits.device:
            raise RNNTInputError(f"ranges must be an integer tensor on {logits.device}")
        r = ranges.long().cpu()
        U = targets.size(1)
        bad = (r < 0) | (r > U)
        if R > 1:
            bad[..., 1:] |= r[..., 1:] != r[..., :-1] + 1
        n = int(torch.nonzero(bad.view(N, -1).any(1))[0]) if bool(bad.any()) else None
        if n is not None:
            t = int(torch.nonzero(bad[n].any(1))[0])
            raise RNNTInputError(f"utterance {n}: ranges at frame {t} are {r[n, t].tolist()}, "
                                 f"not consecutive positions within [0, {U}]")
    elif blank < 0:
        blank = blank % logits.size(-1)
    if reduction not in ("none", "sum", "mean"):
        raise RNNTInputError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    ops = get_rnnt_ops(backend, logits.device)
    config = (int(blank), float(clamp), bool(fused_log_softmax), bool(inplace_grad), ops)
    if logits.device.type == "cpu" and has_fused_cpu_loss(ops):
        costs = _RNNTLossCPU.apply(logits.contiguous(), targets, logit_lengths.long(),
                                   target_lengths.long(), ranges.long().contiguous(), *config)
    else:
        costs = _PrunedRNNTLoss.apply(logits.contiguous(), targets, ranges.long().contiguous(),
                                      logit_lengths.long(), target_lengths.long(), *config)
    return reduce_costs(costs, reduction)
