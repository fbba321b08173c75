"""speechfm.ops: speechfm's own kernels with their pure-PyTorch references.

Importing this package needs torch alone and builds nothing; the C++/CUDA kernels
(sources in ``cuda/rnnt``) are compiled on first use and cached (see
:mod:`speechfm.ops._build`).

RNN-T (:mod:`speechfm.ops.rnnt`)::

    rnnt_loss(logits (N, T, U + 1, V), targets (N, U), logit_lengths (N,),
              target_lengths (N,), *, blank=0, reduction="mean", clamp=0.0,
              fused_log_softmax=True, inplace_grad=False, validate=True, backend="auto")
    mutual_information_recursion(px (N, S, T + 1), py (N, S + 1, T), boundary (N, 4) = None,
                                 *, return_grad=False, validate=True, backend="auto")

Pruned RNN-T (:mod:`speechfm.ops.pruned_rnnt`)::

    rnnt_loss_simple(am (N, T, V), lm (N, U + 1, V), targets, logit_lengths, target_lengths, ...)
    rnnt_loss_smoothed(am, lm, targets, logit_lengths, target_lengths, *, lm_only_scale,
                       am_only_scale, ...)
    get_rnnt_prune_ranges(px_grad, py_grad, logit_lengths, target_lengths, s_range) -> (N, T, R)
    do_rnnt_pruning(am (N, T, C), lm (N, U + 1, C), ranges) -> ((N, T, R, C), (N, T, R, C))
    rnnt_loss_pruned(logits (N, T, R, V), targets, ranges, logit_lengths, target_lengths, ...)

References (:mod:`speechfm.ops.rnnt_reference`): float64 brute-force losses for tests and
the vectorised pure-PyTorch operators (``backend="torch"``).
"""

from speechfm.ops._build import KernelBuildError
from speechfm.ops.pruned_rnnt import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)
from speechfm.ops.rnnt import RNNTInputError, mutual_information_recursion, rnnt_loss

__all__ = [
    "KernelBuildError",
    "RNNTInputError",
    "do_rnnt_pruning",
    "get_rnnt_prune_ranges",
    "mutual_information_recursion",
    "rnnt_loss",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
]
