"""Pure-PyTorch versions of speechfm's RNN-T operators.

Two kinds live here:

- **Brute-force references** in float64 (:func:`rnnt_loss_reference`,
  :func:`pruned_rnnt_loss_reference`, :func:`mutual_information_reference`): plain loops
  over the lattice cells, differentiable by autograd. They are slow and exist as ground
  truth for tests; their gradients come from autograd, independently of the closed-form
  gradients the kernels use.
- **Vectorised primitives** (:class:`TorchOps`): the same four operators as the C++/CUDA
  library ``torch.ops.speechfm_rnnt``, in PyTorch. The recursions run over the
  anti-diagonals of the lattice (all cells of a diagonal at once). ``backend="torch"``
  in :mod:`speechfm.ops.rnnt` uses them; they are the fallback where the kernels cannot
  be built and the peer the benchmark compares against.

Lattice conventions (shared with ``cuda/rnnt/rnnt_common.h``):

- RNN-T logits ``(N, T, J, V)``: row ``(n, t, j)`` is frame ``t`` at symbol position
  ``u = j`` (full loss, ``J = U + 1``) or ``u = ranges[n, t, j]`` (pruned loss). The row
  is valid when ``t < logit_lengths[n]`` and ``0 <= u <= target_lengths[n]``.
- Mutual-information lattice: ``px (N, S, T + 1)`` holds the log-weight of the symbol edge
  ``(s, t) -> (s + 1, t)``, ``py (N, S + 1, T)`` that of the blank edge
  ``(s, t) -> (s, t + 1)``; ``boundary (N, 4)`` is ``[s_begin, t_begin, s_end, t_end]``
  and the log-likelihood is ``alpha[s_end, t_end]`` with ``alpha[s_begin, t_begin] = 0``.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------
# Brute-force float64 references
# --------------------------------------------------------------------------------------
def _logaddexp_list(terms: list[torch.Tensor]) -> torch.Tensor:
    if len(terms) == 1:
        return terms[0]
    return torch.logsumexp(torch.stack(terms), dim=0)


def rnnt_loss_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    fused_log_softmax: bool = True,
) -> torch.Tensor:
    """Per-utterance RNN-T costs by a cell-by-cell float64 recursion.

    Args:
        logits: (N, T, U + 1, V) joiner outputs (or log-probs if not fused_log_softmax).
        targets: (N, U) label ids.
        logit_lengths: (N,) frames per utterance, 1 <= T_n <= T.
        target_lengths: (N,) labels per utterance, 0 <= U_n <= U.
        blank: blank id.
        fused_log_softmax: apply log_softmax over V first.

    Returns:
        (N,) float64 costs -log P(targets | logits); differentiable by autograd.
    """
    lp = logits.double()
    if fused_log_softmax:
        lp = lp.log_softmax(-1)
    costs = []
    for n in range(lp.size(0)):
        Tn, Un = int(logit_lengths[n]), int(target_lengths[n])
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(Tn):
            for u in range(Un + 1):
                if t == 0 and u == 0:
                    alpha[t, u] = lp.new_zeros(())
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1, u] + lp[n, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t, u - 1] + lp[n, t, u - 1, int(targets[n, u - 1])])
                alpha[t, u] = _logaddexp_list(terms)
        costs.append(-(alpha[Tn - 1, Un] + lp[n, Tn - 1, Un, blank]))
    return torch.stack(costs)


def pruned_rnnt_loss_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ranges: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    fused_log_softmax: bool = True,
) -> torch.Tensor:
    """Per-utterance costs over the pruned lattice, cell by cell in float64.

    Frame t keeps the symbol positions ``ranges[n, t, :]`` (consecutive); a path must
    emit its blank of frame t from a kept position, and every symbol it emits within
    frame t must start and end at kept positions.

    Args:
        logits: (N, T, R, V); row (t, r) is symbol position ranges[n, t, r].
        targets: (N, U). ranges: (N, T, R). Other arguments as :func:`rnnt_loss_reference`.

    Returns:
        (N,) float64 costs (inf where no path survives the pruning).
    """
    lp = logits.double()
    if fused_log_softmax:
        lp = lp.log_softmax(-1)
    costs = []
    for n in range(lp.size(0)):
        Tn, Un = int(logit_lengths[n]), int(target_lengths[n])
        window = [{int(s): r for r, s in enumerate(ranges[n, t].tolist())} for t in range(Tn)]
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(Tn):
            for s in sorted(window[t]):
                if s > Un:
                    continue
                if t == 0 and s == 0:
                    alpha[t, s] = lp.new_zeros(())
                    continue
                terms = []
                if t > 0 and (t - 1, s) in alpha:
                    terms.append(alpha[t - 1, s] + lp[n, t - 1, window[t - 1][s], blank])
                if s > 0 and (t, s - 1) in alpha:
                    y = int(targets[n, s - 1])
                    terms.append(alpha[t, s - 1] + lp[n, t, window[t][s - 1], y])
                if terms:
                    alpha[t, s] = _logaddexp_list(terms)
        if (Tn - 1, Un) in alpha:
            costs.append(-(alpha[Tn - 1, Un] + lp[n, Tn - 1, window[Tn - 1][Un], blank]))
        else:
            costs.append(lp.new_tensor(float("inf")))
    return torch.stack(costs)


def mutual_information_reference(
    px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-likelihoods of the mutual-information lattice, cell by cell in float64.

    Args:
        px: (N, S, T + 1) symbol-edge log-weights. py: (N, S + 1, T) blank-edge log-weights.
        boundary: (N, 4) [s_begin, t_begin, s_end, t_end]; default [0, 0, S, T].

    Returns:
        (N,) float64 log-likelihoods alpha[s_end, t_end]; differentiable by autograd.
    """
    px, py = px.double(), py.double()
    N, S, T = px.size(0), px.size(1), py.size(2)
    out = []
    for n in range(N):
        if boundary is None:
            sb, tb, se, te = 0, 0, S, T
        else:
            sb, tb, se, te = (int(v) for v in boundary[n])
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for s in range(sb, se + 1):
            for t in range(tb, te + 1):
                if s == sb and t == tb:
                    alpha[s, t] = px.new_zeros(())
                    continue
                terms = []
                if s > sb:
                    terms.append(alpha[s - 1, t] + px[n, s - 1, t])
                if t > tb:
                    terms.append(alpha[s, t - 1] + py[n, s, t - 1])
                alpha[s, t] = _logaddexp_list(terms)
        out.append(alpha[se, te])
    return torch.stack(out)


# --------------------------------------------------------------------------------------
# Vectorised primitives (backend="torch")
# --------------------------------------------------------------------------------------
def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_labels(targets, target_lengths, logit_lengths, ranges, shape, V, blank):
    """Per-row validity and labels, as in sfm::row_info (rnnt_common.h).

    Returns (valid, has_label, bad, label) of shape (N, T, J); label is 0 where absent.
    """
    N, T, J = shape
    device = targets.device
    t = torch.arange(T, device=device).view(1, T, 1)
    u = ranges if ranges is not None else torch.arange(J, device=device).view(1, 1, J)
    u = u.expand(N, T, J)
    Tn = logit_lengths.view(N, 1, 1)
    Un = target_lengths.view(N, 1, 1)
    valid = (t < Tn) & (u >= 0) & (u <= Un)
    label_row = valid & (u < Un)
    S = targets.size(1)
    if S > 0:
        y = targets.long().gather(1, u.clamp(0, S - 1).reshape(N, T * J)).view(N, T, J)
    else:
        y = torch.zeros(N, T, J, dtype=torch.long, device=device)
    bad = label_row & ((u >= S) | (y < 0) | (y >= V) | (y == blank))
    has_label = label_row & ~bad
    label = torch.where(has_label, y, torch.zeros_like(y))
    return valid, has_label, bad, label


def _log_softmax_entry(x: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return torch.where(x == NEG_INF, x, x - denom)


def _alpha_diagonals(px, py, sb, tb, se, te):
    """alpha (N, S + 1, T + 1) over each utterance's rectangle, one anti-diagonal per step.

    Edges outside the rectangles are masked to -inf, so alpha is -inf outside them.
    """
    N, S, T1 = px.shape
    T = T1 - 1
    dev, dt = px.device, px.dtype
    s_col = torch.arange(S + 1, device=dev).view(1, S + 1, 1)
    t_row = torch.arange(T + 1, device=dev).view(1, 1, T + 1)
    sb_, tb_, se_, te_ = (v.view(N, 1, 1) for v in (sb, tb, se, te))
    in_t = (t_row >= tb_) & (t_row <= te_)
    px_ok = (s_col[:, :S] >= sb_) & (s_col[:, :S] < se_) & in_t
    py_ok = (s_col >= sb_) & (s_col <= se_) & (t_row[..., :T] >= tb_) & (t_row[..., :T] < te_)
    pxm = torch.where(px_ok, px, NEG_INF)
    pym = torch.where(py_ok, py, NEG_INF)
    D = S + T + 1
    d = torch.arange(D, device=dev).view(D, 1)
    s = torch.arange(S + 1, device=dev).view(1, S + 1)
    # Diagonal d holds the cells (s, d - s). own[:, d, s]: weight of the blank edge from
    # (s, d - s - 1); nb[:, d, s]: weight of the symbol edge from (s - 1, d - s).
    t_own = d - s - 1
    own = torch.full((N, D, S + 1), NEG_INF, dtype=dt, device=dev)
    if T > 0:
        idx = t_own.clamp(0, T - 1).t().unsqueeze(0).expand(N, S + 1, D)
        vals = pym.gather(2, idx).transpose(1, 2)
        own = torch.where(((t_own >= 0) & (t_own < T)).unsqueeze(0), vals, own)
    t_nb = d - s
    pxm_shift = torch.cat([pxm.new_full((N, 1, T + 1), NEG_INF), pxm], dim=1)
    idx = t_nb.clamp(0, T).t().unsqueeze(0).expand(N, S + 1, D)
    vals = pxm_shift.gather(2, idx).transpose(1, 2)
    nb = torch.where(((s >= 1) & (t_nb >= 0) & (t_nb <= T)).unsqueeze(0), vals, NEG_INF)
    start = ((sb + tb).view(N, 1, 1) == d.view(1, D, 1)) & (s.view(1, 1, S + 1) == sb.view(N, 1, 1))
    zero = torch.zeros((), dtype=dt, device=dev)
    # Column 0 of `diag` is a -inf pad, so that diag[:, k, :-1] is "s - 1" of diag[:, k, 1:].
    diag = torch.full((N, D, S + 2), NEG_INF, dtype=dt, device=dev)
    diag[:, 0, 1:] = torch.where(start[:, 0], zero, NEG_INF)
    for k in range(1, D):
        prev = diag[:, k - 1]
        cur = torch.logaddexp(prev[:, 1:] + own[:, k], prev[:, :-1] + nb[:, k])
        diag[:, k, 1:] = torch.where(start[:, k], zero, cur)
    s_grid = torch.arange(S + 1, device=dev).view(S + 1, 1)
    t_grid = torch.arange(T + 1, device=dev).view(1, T + 1)
    return diag[:, :, 1:][:, s_grid + t_grid, s_grid]


def _split_boundary(boundary, S, T):
    sb, tb, se, te = boundary.long().unbind(1)
    ok = (sb >= 0) & (sb <= se) & (se <= S) & (tb >= 0) & (tb <= te) & (te <= T)
    zero = torch.zeros_like(sb)
    # Impossible rectangles are replaced by an empty one; their outputs become NaN.
    return (torch.where(ok, sb, zero), torch.where(ok, tb, zero), torch.where(ok, se, zero),
            torch.where(ok, te, zero), ok)


def _beta_diagonals(px, py, sb, tb, se, te):
    S, T = px.size(1), py.size(2)
    # beta is alpha of the lattice with both axes reversed.
    flipped = _alpha_diagonals(px.flip(1, 2), py.flip(1, 2), S - se, T - te, S - sb, T - tb)
    return flipped.flip(1, 2)


class TorchOps:
    """The ``torch.ops.speechfm_rnnt`` operators in pure PyTorch (same signatures)."""

    @staticmethod
    def rnnt_row_logprobs(logits, targets, target_lengths, logit_lengths, ranges, blank, fused,
                          out_blank, out_label):
        N, T, J, V = logits.shape
        acc = _acc_dtype(logits.dtype)
        valid, has_label, bad, label = _row_labels(targets, target_lengths, logit_lengths,
                                                   ranges, (N, T, J), V, blank)
        if fused:
            denom = torch.logsumexp(logits.to(acc), dim=-1)
        else:
            denom = torch.zeros(N, T, J, dtype=acc, device=logits.device)
        lb = logits[..., blank].to(acc)
        ll = logits.gather(-1, label.unsqueeze(-1)).squeeze(-1).to(acc)
        if fused:
            lb, ll = _log_softmax_entry(lb, denom), _log_softmax_entry(ll, denom)
        lb = torch.where(bad, float("nan"), lb)
        out_blank.copy_(torch.where(valid, lb, NEG_INF))
        out_label.copy_(torch.where(has_label, ll, NEG_INF)[..., : out_label.size(2)])
        return torch.where(valid, denom, 0.0)

    @staticmethod
    def rnnt_logits_grad(logits, denom, targets, target_lengths, logit_lengths, ranges,
                         occ_blank, occ_label, scale, blank, clamp, fused, grad):
        N, T, J, V = logits.shape
        valid, has_label, bad, label = _row_labels(targets, target_lengths, logit_lengths,
                                                   ranges, (N, T, J), V, blank)
        if occ_label.size(2) < J:
            occ_label = torch.nn.functional.pad(occ_label, (0, J - occ_label.size(2)))
        ob = torch.where(valid, torch.where(bad, float("nan"), occ_blank), 0.0)
        ol = torch.where(has_label, occ_label, 0.0)
        occ = ob + ol
        if fused:
            soft = torch.exp(logits.to(denom.dtype) - denom.unsqueeze(-1)) * occ.unsqueeze(-1)
            g = torch.where((occ == 0).unsqueeze(-1), 0.0, soft)
        else:
            g = torch.zeros(N, T, J, V, dtype=denom.dtype, device=logits.device)
        g[..., blank] -= ob
        g.scatter_add_(-1, label.unsqueeze(-1), -ol.unsqueeze(-1))
        if clamp > 0:
            g = g.clamp(-clamp, clamp)
        g = g * scale.view(N, 1, 1, 1)
        grad.copy_(torch.where(valid.unsqueeze(-1), g, 0.0))

    @staticmethod
    def mutual_information_forward(px, py, boundary, with_beta):
        S, T = px.size(1), py.size(2)
        sb, tb, se, te, ok = _split_boundary(boundary, S, T)
        alpha = _alpha_diagonals(px, py, sb, tb, se, te)
        n = torch.arange(px.size(0), device=px.device)
        loglik = torch.where(ok, alpha[n, se, te], float("nan"))
        beta = _beta_diagonals(px, py, sb, tb, se, te) if with_beta else px.new_empty(0)
        return alpha, loglik, beta

    @staticmethod
    def mutual_information_backward(px, py, boundary, alpha, beta, loglik, scale):
        N, S, T = px.size(0), px.size(1), py.size(2)
        sb, tb, se, te, ok = _split_boundary(boundary, S, T)
        if beta is None or beta.numel() == 0:
            beta = _beta_diagonals(px, py, sb, tb, se, te)
        s_col = torch.arange(S + 1, device=px.device).view(1, S + 1, 1)
        t_row = torch.arange(T + 1, device=px.device).view(1, 1, T + 1)
        sb_, tb_, se_, te_ = (v.view(N, 1, 1) for v in (sb, tb, se, te))
        in_t = (t_row >= tb_) & (t_row <= te_)
        px_ok = (s_col[:, :S] >= sb_) & (s_col[:, :S] < se_) & in_t
        py_ok = (s_col >= sb_) & (s_col <= se_) & (t_row[..., :T] >= tb_) & (t_row[..., :T] < te_)
        ll = loglik.view(N, 1, 1)
        feasible = ll != NEG_INF
        gx = torch.exp(alpha[:, :S] + px + beta[:, 1:] - ll)
        gy = torch.exp(alpha[:, :, :T] + py + beta[:, :, 1:] - ll)
        sc = scale.view(N, 1, 1) if scale is not None else 1.0
        gx = torch.where(px_ok & feasible, gx * sc, 0.0)
        gy = torch.where(py_ok & feasible, gy * sc, 0.0)
        bad = ~ok.view(N, 1, 1)
        return (torch.where(bad, float("nan"), gx).contiguous(),
                torch.where(bad, float("nan"), gy).contiguous())
