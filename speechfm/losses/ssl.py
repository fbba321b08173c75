"""Self-supervised pretraining losses: wav2vec 2.0's contrastive task and w2v-BERT's masked
prediction.

Contrastive (wav2vec 2.0, Baevski et al. 2020; the contrastive module of w2v-BERT, Chung
et al. 2021): at each masked frame the context vector ``c_t`` must pick its quantized
target ``q_t`` among ``K`` distractors, the targets of other masked frames of the same
utterance::

    L_t = -log( exp(sim(c_t, q_t) / tau) / sum_{q in {q_t} U Q_t} exp(sim(c_t, q) / tau) )

with cosine similarity ``sim``.  Distractors are drawn without replacement and never
include the frame itself; a distractor whose vector equals the positive's (same codes) is
dropped, as in fairseq, since it cannot be told apart.  An utterance with fewer than
``K + 1`` masked frames uses all its other masked frames and marks the rest invalid.

Masked prediction (w2v-BERT's MLM): cross-entropy of the predicted code ids at masked
frames, one term per codebook group.

Losses are sums (callers normalise, e.g. by ``count``) in float32, float64 for float64
inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ContrastiveOutput",
    "contrastive_loss",
    "feature_penalty",
    "masked_prediction_loss",
    "sample_negatives",
]

# Bounds the (rows, candidates) random-key matrix of sample_negatives, in elements.
_KEY_CHUNK = 1 << 22


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (N, T), got {mask.dtype} {tuple(mask.shape)}")


def _loss_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def sample_negatives(
    mask: torch.Tensor,
    num_negatives: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distractors for every masked frame, from the masked frames of its own utterance.

    Args:
        mask: bool (N, T), True on masked frames.
        num_negatives: K distractors per masked frame.
        generator: source of randomness (drawn on its device; outputs on ``mask``'s).

    Returns:
        neg_index: int64 (M, K) flat indices into the N * T frames (``n * T + t``), M the
            masked frames in the order of ``mask.nonzero()``.  Each row holds distinct
            frames, drawn uniformly from the other masked frames of the same utterance;
            invalid entries hold the frame's own index.
        neg_valid: bool (M, K), False where the utterance ran out of masked frames (it has
            fewer than K + 1).
    """
    _check_mask(mask)
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    n, t = mask.shape
    device = mask.device
    flat = mask.reshape(-1).nonzero().squeeze(1)  # (M,)
    m, k = flat.numel(), num_negatives
    if m == 0 or k == 0:
        empty = torch.empty(m, k, dtype=torch.int64, device=device)
        return empty, torch.zeros(m, k, dtype=torch.bool, device=device)
    utt = flat // t
    counts = mask.sum(dim=1)
    rank = (mask.cumsum(dim=1) - 1).reshape(-1)[flat]  # position among its utterance's
    width = int(counts.max())
    table = torch.zeros(n, width, dtype=torch.int64, device=device)
    table[utt, rank] = flat
    own_count = counts[utt]
    take = min(k, width)
    cols = torch.arange(width, device=device)
    rand_device = generator.device if generator is not None else device
    rows = max(1, _KEY_CHUNK // width)
    picks, kept = [], []
    # A uniform k-subset without replacement: the k smallest of i.i.d. uniform keys over
    # the candidates; the positive and the other utterances' slots get key 2 (never picked
    # before a real candidate, and recognisable afterwards).
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        keys = torch.rand(hi - lo, width, generator=generator, device=rand_device).to(device)
        bad = (cols[None, :] >= own_count[lo:hi, None]) | (cols[None, :] == rank[lo:hi, None])
        vals, idx = keys.masked_fill(bad, 2.0).topk(take, dim=1, largest=False)
        picks.append(idx)
        kept.append(vals < 2.0)
    idx, neg_valid = torch.cat(picks), torch.cat(kept)
    neg_index = torch.where(neg_valid, table[utt[:, None], idx], flat[:, None])
    if take < k:
        pad = k - take
        neg_index = torch.cat([neg_index, flat[:, None].expand(m, pad)], dim=1)
        neg_valid = torch.cat([neg_valid, neg_valid.new_zeros(m, pad)], dim=1)
    return neg_index, neg_valid


@dataclass
class ContrastiveOutput:
    """What :func:`contrastive_loss` computed."""

    loss: torch.Tensor
    """Scalar: InfoNCE cross-entropy summed over the masked frames (nats)."""
    count: torch.Tensor
    """int64 scalar: masked frames M."""
    correct: torch.Tensor
    """int64 scalar: masked frames whose positive scores strictly above every usable
    distractor (a frame without usable distractors counts as correct)."""
    num_negatives_used: torch.Tensor
    """Float scalar: mean usable distractors per masked frame (valid and not identical to
    the positive); 0 without masked frames."""


def contrastive_loss(
    context: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_negatives: int = 100,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
    negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ContrastiveOutput:
    """wav2vec 2.0's contrastive loss over the masked frames (see the module doc).

    Args:
        context: (N, T, D) context-network outputs (projected to the target width).
        targets: (N, T, D) quantized targets; only masked frames are read.
        mask: bool (N, T), True on masked frames.
        num_negatives: K distractors per masked frame (ignored with ``negatives``).
        temperature: divides the cosine similarities (wav2vec 2.0: 0.1).
        generator: source of the distractor draw.
        negatives: precomputed ``(neg_index, neg_valid)`` as returned by
            :func:`sample_negatives` for this ``mask``.

    Returns:
        :class:`ContrastiveOutput`.
    """
    _check_mask(mask)
    if context.dim() != 3 or targets.shape != context.shape:
        raise ValueError(
            f"context and targets must both be (N, T, D), got {tuple(context.shape)} and "
            f"{tuple(targets.shape)}"
        )
    n, t, d = context.shape
    if mask.shape != (n, t):
        raise ValueError(f"mask must be ({n}, {t}), got {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if negatives is None:
        neg_index, neg_valid = sample_negatives(mask, num_negatives, generator=generator)
    else:
        neg_index, neg_valid = negatives
    flat = mask.reshape(-1).nonzero().squeeze(1)
    m = flat.numel()
    if neg_index.dim() != 2 or neg_index.shape[0] != m or neg_valid.shape != neg_index.shape:
        raise ValueError(
            f"negatives must be (M, K) with M = {m} masked frames, got {tuple(neg_index.shape)} "
            f"and {tuple(neg_valid.shape)}"
        )
    dtype = _loss_dtype(context, targets)
    if m == 0:
        zero = (context.sum() + targets.sum()).to(dtype) * 0.0
        none = torch.zeros((), dtype=torch.int64, device=context.device)
        return ContrastiveOutput(
            loss=zero, count=none, correct=none.clone(), num_negatives_used=zero.detach()
        )
    all_targets = targets.reshape(n * t, d)
    pos = all_targets[flat]  # (M, D)
    neg = all_targets[neg_index]  # (M, K, D)
    usable = neg_valid & ~(neg == pos[:, None, :]).all(dim=-1)
    ctx = context.reshape(n * t, d)[flat].to(dtype)
    cands = torch.cat([pos[:, None, :], neg], dim=1).to(dtype)  # (M, 1 + K, D)
    sims = F.cosine_similarity(ctx[:, None, :], cands, dim=-1) / temperature
    neg_logits = sims[:, 1:].masked_fill(~usable, float("-inf"))
    logits = torch.cat([sims[:, :1], neg_logits], dim=1)
    labels = torch.zeros(m, dtype=torch.int64, device=logits.device)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    with torch.no_grad():
        if neg_logits.shape[1]:
            correct = (sims[:, 0] > neg_logits.amax(dim=1)).sum()
        else:
            correct = torch.tensor(m, device=logits.device)
        used = usable.sum(dim=1).to(dtype).mean()
    return ContrastiveOutput(
        loss=loss,
        count=torch.tensor(m, dtype=torch.int64, device=logits.device),
        correct=correct.to(torch.int64),
        num_negatives_used=used,
    )


def feature_penalty(features: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """wav2vec 2.0's ``features_pen``: mean square of the front-end features.

    Args:
        features: (N, T, C) feature-encoder outputs.
        valid: bool (N, T), True on frames to average over (None: all).

    Returns:
        Scalar, ``sum(features ** 2 over valid frames) / (valid frames * C)``; 0 without
        valid frames.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (N, T, C), got shape {tuple(features.shape)}")
    sq = features.to(_loss_dtype(features)).pow(2)
    if valid is None:
        return sq.mean() if sq.numel() else sq.sum()
    if valid.shape != features.shape[:2] or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be bool {tuple(features.shape[:2])}, got {valid.dtype} "
            f"{tuple(valid.shape)}"
        )
    # masked_fill, not a product: a NaN in padding must not leak into the penalty.
    total = sq.masked_fill(~valid[:, :, None], 0.0).sum()
    return total / (valid.sum() * features.shape[2]).clamp(min=1)


def masked_prediction_loss(
    logits: torch.Tensor,
    code_ids: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of predicted code ids at masked frames (w2v-BERT's MLM loss).

    Args:
        logits: (N, T, G, V) or (N, T, V) (one group) prediction logits.
        code_ids: int (N, T, G) or (N, T) target ids in [0, V); read at masked frames only.
        mask: bool (N, T), True on masked frames.

    Returns:
        loss_sum: scalar, cross-entropy summed over masked frames and groups (nats).
        count: int64 scalar, masked frames times G.
        correct: int64 scalar, (frame, group) pairs whose argmax is the target.
    """
    _check_mask(mask)
    if logits.dim() == 3:
        logits = logits.unsqueeze(2)
        if code_ids.dim() == 2:
            code_ids = code_ids.unsqueeze(2)
    if logits.dim() != 4 or code_ids.shape != logits.shape[:3]:
        raise ValueError(
            f"logits (N, T, G, V) or (N, T, V) must match code_ids (N, T, G) or (N, T); got "
            f"{tuple(logits.shape)} and {tuple(code_ids.shape)}"
        )
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"mask must be {tuple(logits.shape[:2])}, got {tuple(mask.shape)}")
    if code_ids.is_floating_point() or code_ids.dtype == torch.bool:
        raise ValueError(f"code_ids must be an integer tensor, got {code_ids.dtype}")
    v = logits.shape[3]
    picked = logits[mask].to(_loss_dtype(logits)).reshape(-1, v)  # (M G, V)
    target = code_ids[mask].to(torch.int64).reshape(-1)
    if target.numel() and bool(((target < 0) | (target >= v)).any()):
        raise ValueError(f"code_ids at masked frames must lie in [0, {v})")
    loss = F.cross_entropy(picked, target, reduction="sum")
    with torch.no_grad():
        correct = (picked.argmax(dim=-1) == target).sum() if target.numel() else target.sum()
    count = torch.tensor(target.numel(), dtype=torch.int64, device=logits.device)
    return loss, count, correct
