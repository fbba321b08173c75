"""Span masking for masked-prediction and contrastive pretraining (wav2vec 2.0, w2v-BERT).

An utterance of ``L`` valid frames gets ``k`` span starts, drawn uniformly *without
replacement* from the ``L - s + 1`` positions ``[0, L - s]``, and each start masks the ``s``
frames that follow it (``s = span``, clipped for short utterances, see below)::

    k = max(min_spans, floor(mask_prob * L / span + u)),   u ~ U[0, 1)

so ``E[k] = mask_prob * L / span`` (before ``min_spans``), as in fairseq's
``compute_mask_indices`` and fairseq2's ``compute_row_mask``.  ``mask_prob`` is therefore
the fraction of frames that *would* be masked if spans never overlapped; the wav2vec 2.0
paper states the same rule as a start probability ``p = mask_prob / span`` per frame
(``p = 0.065``, ``M = 10`` there, i.e. ``mask_prob = 0.65``).  Spans do overlap, so the
expected masked fraction is *below* ``mask_prob``: about 0.49 for ``mask_prob = 0.65``,
``span = 10`` on long utterances (``1 - (1 - p) ** span`` in the large-``L`` limit).

Short utterances and guarantees:

- the span length is ``s = min(span, L - 1)`` for ``L >= 2`` (and 1 for ``L == 1``), and
  ``k`` is capped at the ``L - s + 1`` available starts;
- every utterance with ``L >= 1`` gets at least one masked frame (``min_spans >= 1``);
- an utterance with ``L >= 2`` keeps at least one unmasked frame: in the rare draw where
  the spans cover all of it, one uniformly chosen frame is unmasked again (the
  Transformer needs some context to predict from);
- padding (``t >= L``) is never masked.

All random numbers come from ``generator`` (on its device, or on ``x_lens``' device without
one), so a seeded generator gives the same mask on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MaskingConfig", "compute_span_mask", "sample_span_starts"]


@dataclass(kw_only=True)
class MaskingConfig:
    """Span-masking settings (see :mod:`speechfm.nn.masking`)."""

    mask_prob: float = 0.65
    """Expected starts times ``span`` over the frames: E[starts] = mask_prob * L / span.
    Overlaps make the masked fraction smaller (~0.49 for 0.65 and span 10)."""
    span: int = 10
    """Frames masked after each start (clipped to L - 1 on short utterances)."""
    min_spans: int = 2
    """Fewest span starts per utterance (>= 1; capped by the starts that fit)."""

    @property
    def start_prob(self) -> float:
        """The wav2vec 2.0 paper's ``p``: expected span starts per frame."""
        return self.mask_prob / self.span

    def validate(self) -> None:
        _check(self.mask_prob, self.span, self.min_spans)


def _check(mask_prob: float, span: int, min_spans: int) -> None:
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if min_spans < 1:
        raise ValueError(
            f"min_spans must be >= 1 (every utterance gets a masked frame), got {min_spans}"
        )


def _check_lens(x_lens: torch.Tensor, max_len: int | None) -> torch.Tensor:
    if x_lens.dim() != 1:
        raise ValueError(f"x_lens must be (N,), got shape {tuple(x_lens.shape)}")
    if x_lens.is_floating_point() or x_lens.is_complex() or x_lens.dtype == torch.bool:
        raise ValueError(f"x_lens must be an integer tensor, got {x_lens.dtype}")
    x_lens = x_lens.to(torch.int64)
    if x_lens.numel() and bool((x_lens < 0).any()):
        raise ValueError("x_lens must be >= 0")
    if max_len is not None:
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        if x_lens.numel() and int(x_lens.max()) > max_len:
            raise ValueError(f"x_lens {int(x_lens.max())} exceeds max_len {max_len}")
    return x_lens


def _random_device(x_lens: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x_lens.device


def sample_span_starts(
    x_lens: torch.Tensor,
    *,
    mask_prob: float = 0.65,
    span: int = 10,
    min_spans: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the span starts of :func:`compute_span_mask` (the rule in the module doc).

    Args:
        x_lens: int (N,) valid frames per utterance.
        mask_prob: E[starts] = mask_prob * L / span (see the module doc).
        span: frames per span before clipping.
        min_spans: fewest starts per non-empty utterance (>= 1).
        generator: source of randomness; outputs are on ``x_lens``' device.

    Returns:
        starts: int64 (N, S), the distinct starts of each utterance in increasing order,
            S = the largest start count in the batch; entries past the count are 0.
        valid: bool (N, S), True on the real starts (``valid.sum(1)`` is ``k`` per utterance).
        span_lens: int64 (N,), the (clipped) span length ``s`` of each utterance.
    """
    _check(mask_prob, span, min_spans)
    x_lens = _check_lens(x_lens, None)
    out_device = x_lens.device
    device = _random_device(x_lens, generator)
    lens = x_lens.to(device)
    n = lens.shape[0]
    # s = min(span, L - 1) keeps one frame free for L >= 2; L == 1 masks its only frame.
    span_lens = torch.clamp(torch.clamp(lens - 1, max=span), min=1)
    positions = torch.clamp(lens - span_lens + 1, min=0)
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    count = torch.floor(mask_prob * lens.to(torch.float64) / span + u).to(torch.int64)
    count = torch.minimum(torch.clamp(count, min=min_spans), positions)
    p_max = int(positions.max()) if n else 0
    s_max = int(count.max()) if n else 0
    # Uniform sampling without replacement: the k smallest of i.i.d. uniform keys.
    keys = torch.rand(n, p_max, generator=generator, device=device)
    pos = torch.arange(p_max, device=device)
    keys = keys.masked_fill(pos[None, :] >= positions[:, None], 2.0)
    chosen = keys.topk(s_max, dim=1, largest=False).indices
    valid = torch.arange(s_max, device=device)[None, :] < count[:, None]
    # Impossible positions have the largest keys, so the first `count` columns are real.
    starts = chosen.masked_fill(~valid, p_max).sort(dim=1).values.masked_fill(~valid, 0)
    return starts.to(out_device), valid.to(out_device), span_lens.to(out_device)


def compute_span_mask(
    x_lens: torch.Tensor,
    max_len: int,
    *,
    mask_prob: float = 0.65,
    span: int = 10,
    min_spans: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random span mask over a padded batch (wav2vec 2.0 style; rule in the module doc).

    Args:
        x_lens: int (N,) valid frames per utterance, each <= ``max_len``.
        max_len: T, frames of the padded batch.
        mask_prob: E[starts] = mask_prob * L / span; the masked fraction is lower because
            spans overlap (about 0.49 for the defaults on long utterances).
        span: frames masked after each start (clipped to L - 1 for short utterances).
        min_spans: fewest starts per utterance (>= 1).
        generator: source of randomness (same seed, same mask).

    Returns:
        bool (N, T) on ``x_lens``' device, True on masked frames; never True on padding,
        at least one True per utterance with L >= 1, at least one False among the valid
        frames of an utterance with L >= 2.
    """
    x_lens = _check_lens(x_lens, max_len)
    starts, valid, span_lens = sample_span_starts(
        x_lens, mask_prob=mask_prob, span=span, min_spans=min_spans, generator=generator
    )
    device = _random_device(x_lens, generator)
    lens = x_lens.to(device)
    starts, valid, span_lens = starts.to(device), valid.to(device), span_lens.to(device)
    n = lens.shape[0]
    offsets = torch.arange(span, device=device)
    frames = starts[:, :, None] + offsets  # (N, S, span)
    keep = valid[:, :, None] & (offsets < span_lens[:, None, None])
    # A spare last column swallows the writes of unused (start, offset) pairs.
    frames = frames.masked_fill(~keep, max_len).reshape(n, frames.shape[1] * span)
    mask = torch.zeros(n, max_len + 1, dtype=torch.bool, device=device)
    mask.scatter_(1, frames, torch.ones_like(frames, dtype=torch.bool))
    # Drawn for every utterance, so the generator advances the same way whatever the mask.
    r = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    free = torch.clamp(torch.floor(r * lens).to(torch.int64), min=0)
    free = torch.minimum(free, torch.clamp(lens - 1, min=0))
    full = (mask[:, :max_len].sum(dim=1) == lens) & (lens >= 2)
    unmask = torch.zeros_like(mask).scatter_(1, free[:, None], full[:, None])
    mask = mask & ~unmask
    return mask[:, :max_len].to(x_lens.device)
