"""Connectionist temporal classification (CTC) loss with input checks and infinity reporting.

:func:`ctc_loss` wraps :func:`torch.nn.functional.ctc_loss` with:

- validation that fails early with a message naming the utterance (lengths beyond the
  tensors, targets containing the blank or ids outside the vocabulary, ...), where torch
  would silently read garbage or crash deep inside a kernel;
- per-utterance losses in float32 whatever the input precision;
- *reported* infinities: an utterance whose target cannot be aligned to its frames (more
  labels, counting the blank needed between repeats, than frames) has an infinite loss.
  With ``zero_infinity=True`` it contributes zero loss and zero gradient (the rest of the
  batch still trains) and ``per_utt`` keeps ``inf`` for it, so a caller can count and log
  it; with ``zero_infinity=False`` the reduced loss is ``inf`` and a trainer that skips
  non-finite steps drops the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ctc_loss", "ctc_min_frames", "pad_targets"]

_REDUCTIONS = ("sum", "mean", "none")


def pad_targets(
    targets: Sequence[Sequence[int]],
    *,
    pad_value: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into a batch.

    Args:
        targets: N lists of token ids (may be empty).
        pad_value: value of the padding (never read by the loss).
        device: device of the returned tensors.

    Returns:
        targets: int64 (N, U) with U = the longest list (0 for an all-empty batch).
        y_lens: int64 (N,) list lengths.
    """
    lens = [len(t) for t in targets]
    width = max(lens, default=0)
    out = torch.full((len(lens), width), pad_value, dtype=torch.int64)
    for i, t in enumerate(targets):
        if lens[i]:
            out[i, : lens[i]] = torch.as_tensor(list(t), dtype=torch.int64)
    return out.to(device), torch.tensor(lens, dtype=torch.int64, device=device)


def ctc_min_frames(targets: torch.Tensor, y_lens: torch.Tensor) -> torch.Tensor:
    """Fewest frames a CTC alignment of each target needs: U plus one blank per repeat.

    Args:
        targets: int (N, U) padded targets.
        y_lens: int (N,) valid lengths.

    Returns:
        int64 (N,).
    """
    y_lens = y_lens.to(torch.int64)
    if targets.shape[1] < 2:
        return y_lens.clone()
    valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < y_lens[:, None]
    repeats = (targets[:, 1:] == targets[:, :-1]) & valid[:, 1:]
    return y_lens + repeats.sum(dim=1)


def _name(i: int, utt_ids: Sequence[str] | None) -> str:
    return f"utterance {utt_ids[i]!r}" if utt_ids is not None else f"utterance {i} of the batch"


def _first_bad(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def _validate(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: torch.Tensor,
    y_lens: torch.Tensor,
    blank: int,
    utt_ids: Sequence[str] | None,
) -> torch.Tensor:
    """Check shapes and values; return the (N, U) padded targets with padding set to 1."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got shape {tuple(log_probs.shape)}")
    if not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be floating point, got {log_probs.dtype}")
    n, t, v = log_probs.shape
    if not 0 <= blank < v:
        raise ValueError(f"blank id {blank} is outside the vocabulary [0, {v})")
    if utt_ids is not None and len(utt_ids) != n:
        raise ValueError(f"got {len(utt_ids)} utterance ids for a batch of {n}")
    for name, lens in (("out_lens", out_lens), ("y_lens", y_lens)):
        if lens.shape != (n,):
            raise ValueError(f"{name} must be ({n},), got shape {tuple(lens.shape)}")
        if lens.is_floating_point() or lens.is_complex():
            raise ValueError(f"{name} must be an integer tensor, got {lens.dtype}")
        if bool((lens < 0).any()):
            i = _first_bad(lens < 0)
            raise ValueError(f"{_name(i, utt_ids)}: negative {name} {int(lens[i])}")
    if bool((out_lens > t).any()):
        i = _first_bad(out_lens > t)
        raise ValueError(
            f"{_name(i, utt_ids)}: out_lens {int(out_lens[i])} exceeds the {t} frames of log_probs"
        )
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"targets must be an integer tensor, got {targets.dtype}")
    if targets.dim() == 1:
        # Concatenated form: rebuild the padded one so both share the checks below.
        total = int(y_lens.sum())
        if total != targets.shape[0]:
            raise ValueError(
                f"concatenated targets hold {targets.shape[0]} ids but y_lens sum to {total}"
            )
        width = int(y_lens.max()) if n else 0
        padded = targets.new_ones(n, width)
        valid = torch.arange(width, device=targets.device)[None, :] < y_lens[:, None].to(
            targets.device
        )
        padded[valid] = targets
        targets = padded
    elif targets.dim() == 2:
        if targets.shape[0] != n:
            raise ValueError(f"targets has {targets.shape[0]} rows for a batch of {n}")
        if bool((y_lens > targets.shape[1]).any()):
            i = _first_bad(y_lens > targets.shape[1])
            raise ValueError(
                f"{_name(i, utt_ids)}: y_lens {int(y_lens[i])} exceeds the target width "
                f"{targets.shape[1]}"
            )
    else:
        raise ValueError(
            f"targets must be (N, U) padded or (sum(y_lens),) concatenated, got shape "
            f"{tuple(targets.shape)}"
        )
    targets = targets.to(torch.int64)
    u = targets.shape[1]
    valid = torch.arange(u, device=targets.device)[None, :] < y_lens.to(targets.device)[:, None]
    bad_range = valid & ((targets < 0) | (targets >= v))
    if bool(bad_range.any()):
        i, j = (int(x) for x in bad_range.nonzero()[0])
        raise ValueError(
            f"{_name(i, utt_ids)}: target id {int(targets[i, j])} at position {j} is outside "
            f"the vocabulary [0, {v})"
        )
    has_blank = valid & (targets == blank)
    if bool(has_blank.any()):
        i, j = (int(x) for x in has_blank.nonzero()[0])
        raise ValueError(
            f"{_name(i, utt_ids)}: target contains the blank id {blank} at position {j}; "
            "the blank must never be a label"
        )
    # Torch never reads the padding; an in-vocabulary id keeps any kernel check quiet.
    return targets.masked_fill(~valid, blank)


def ctc_loss(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: torch.Tensor,
    y_lens: torch.Tensor,
    *,
    blank: int = 0,
    reduction: str = "sum",
    zero_infinity: bool = True,
    utt_ids: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC negative log-likelihood of a batch.

    Args:
        log_probs: (N, T, V) log-posteriors (log_softmax output); computed in float32 (a
            float64 input stays float64).
        out_lens: int (N,) valid frames per utterance, <= T.
        targets: int (N, U) padded targets, or (sum(y_lens),) concatenated; ids in
            [0, V) and never ``blank``.
        y_lens: int (N,) target lengths.
        blank: blank id.
        reduction: "sum" over utterances, "mean" (that sum divided by N) or "none".
        zero_infinity: infeasible utterances (see module doc) add 0 to the loss and its
            gradient instead of making it infinite.
        utt_ids: names of the utterances, used in error messages.

    Returns:
        loss: scalar for "sum"/"mean", (N,) for "none" (infeasible entries 0 when
            ``zero_infinity``, else inf).
        per_utt: detached float (N,) per-utterance losses in nats, ``inf`` where the
            target cannot be aligned, whatever ``zero_infinity`` says.

    Raises:
        ValueError: inconsistent shapes or values; the message names the utterance.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    padded = _validate(log_probs, out_lens, targets, y_lens, blank, utt_ids)
    device = log_probs.device
    out_lens = out_lens.to(device=device, dtype=torch.int64)
    y_lens = y_lens.to(device=device, dtype=torch.int64)
    padded = padded.to(device)
    dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    lp = log_probs.to(dtype).transpose(0, 1)  # torch wants (T, N, V)
    # zero_infinity=True inside torch in every case: without it the backward of an
    # infinite entry is NaN, and 0 * NaN would poison the whole gradient.
    raw = F.ctc_loss(
        lp, padded, out_lens, y_lens, blank=blank, reduction="none", zero_infinity=True
    )
    infeasible = out_lens < ctc_min_frames(padded, y_lens)
    # An exact 0 from torch is either a certain alignment or a zeroed infinity (e.g. from
    # -inf log-probs on a masked vocabulary); recheck those few without gradients.
    suspect = (raw.detach() == 0) & ~infeasible
    if bool(suspect.any()):
        idx = suspect.nonzero()[:, 0]
        with torch.no_grad():
            check = F.ctc_loss(
                lp[:, idx],
                padded[idx],
                out_lens[idx],
                y_lens[idx],
                blank=blank,
                reduction="none",
                zero_infinity=False,
            )
        infeasible = infeasible.clone()
        infeasible[idx] = ~torch.isfinite(check)
    per_utt = raw.detach().masked_fill(infeasible, float("inf"))
    losses = raw if zero_infinity else raw.masked_fill(infeasible, float("inf"))
    if reduction == "none":
        return losses, per_utt
    total = losses.sum()
    if reduction == "mean":
        total = total / max(losses.shape[0], 1)
    return total, per_utt
