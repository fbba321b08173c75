"""Gumbel-softmax product quantizer (wav2vec 2.0, w2v-BERT's contrastive module).

Each frame is projected to ``G`` groups of ``V`` logits; each group picks one of its ``V``
codebook entries (vectors of ``code_dim // G``), and the ``G`` picks are concatenated into
a ``code_dim`` vector.  In training the pick is a straight-through Gumbel-softmax sample
(``hard=True``: the forward value is an exact codebook entry, the gradient is that of the
soft sample), at a temperature annealed per step as in wav2vec 2.0::

    temperature(step) = max(start * decay ** step, end)

In eval the pick is the argmax of the logits, without noise.

Codebook usage is reported as in fairseq's ``GumbelVectorQuantizer``: for each group, the
perplexity ``exp(H(p))`` of the code distribution averaged over the valid frames (the hard
argmax codes for ``code_perplexity``, the softmax probabilities for ``prob_perplexity``),
summed over the groups, so both lie in ``[G, G * V]``.  The diversity loss of wav2vec 2.0 is
``(G V - prob_perplexity) / (G V)`` in ``[0, 1 - 1 / V]``; minimising it spreads the
softmax mass over the codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GumbelVectorQuantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "collapse_warning",
    "create_gumbel_quantizer",
    "gumbel_temperature",
]


def gumbel_temperature(step: int, *, start: float, end: float, decay: float) -> float:
    """wav2vec 2.0's annealing: ``max(start * decay ** step, end)`` (step >= 0)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return max(start * decay**step, end)


@dataclass(kw_only=True)
class QuantizerConfig:
    """Gumbel vector quantizer settings (see :mod:`speechfm.nn.quantizer`)."""

    num_groups: int = 1
    """G: codebooks, each picking one entry per frame (wav2vec 2.0: 2, w2v-BERT: 1)."""
    num_entries: int = 1024
    """V: entries per codebook."""
    code_dim: int = 256
    """Width of a quantized frame (G entries of code_dim // G concatenated)."""
    start_temperature: float = 2.0
    """Gumbel-softmax temperature at step 0."""
    end_temperature: float = 0.1
    """Floor of the annealed temperature."""
    temperature_decay: float = 0.999995
    """Per-step multiplicative decay of the temperature."""

    def validate(self) -> None:
        _check(
            num_groups=self.num_groups,
            num_entries=self.num_entries,
            code_dim=self.code_dim,
            start_temperature=self.start_temperature,
            end_temperature=self.end_temperature,
            temperature_decay=self.temperature_decay,
        )


def _check(
    *,
    num_groups: int,
    num_entries: int,
    code_dim: int,
    start_temperature: float,
    end_temperature: float,
    temperature_decay: float,
) -> None:
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    if num_entries < 1:
        raise ValueError(f"num_entries must be >= 1, got {num_entries}")
    if code_dim < 1 or code_dim % num_groups:
        raise ValueError(
            f"code_dim must be a positive multiple of num_groups ({num_groups}), got {code_dim}"
        )
    if not 0 < end_temperature <= start_temperature:
        raise ValueError(
            f"temperatures must satisfy 0 < end <= start, got start={start_temperature}, "
            f"end={end_temperature}"
        )
    if not 0 < temperature_decay <= 1:
        raise ValueError(f"temperature_decay must be in (0, 1], got {temperature_decay}")


@dataclass
class QuantizerOutput:
    """What :class:`GumbelVectorQuantizer` computed for a batch."""

    quantized: torch.Tensor
    """(N, T, code_dim) quantized frames (straight-through in training)."""
    code_ids: torch.Tensor
    """int64 (N, T, G) argmax of the logits (noise-free; the eval pick)."""
    sampled_ids: torch.Tensor
    """int64 (N, T, G) entries in ``quantized``: the Gumbel samples in training (fairseq2's
    w2v-BERT takes its MLM targets from these), ``code_ids`` in eval."""
    logits: torch.Tensor
    """(N, T, G, V) projection logits."""
    code_perplexity: torch.Tensor
    """Detached scalar: perplexity of the argmax codes over valid frames, summed over groups."""
    prob_perplexity: torch.Tensor
    """Scalar with gradient: perplexity of the mean softmax over valid frames, summed over
    groups."""
    diversity_loss: torch.Tensor
    """Scalar with gradient: ``(G V - prob_perplexity) / (G V)``."""
    temperature: float
    """Gumbel-softmax temperature in force."""
    num_used_codes: torch.Tensor
    """Detached int64 scalar: distinct (group, entry) argmax codes over valid frames."""
    used_fraction: torch.Tensor
    """Detached scalar: ``num_used_codes / (G V)``."""
    num_frames: torch.Tensor
    """Detached int64 scalar: valid frames the statistics are over."""
    num_groups: int
    """G."""
    num_entries: int
    """V."""


def _perplexity(probs: torch.Tensor) -> torch.Tensor:
    """(G, V) distributions -> sum over groups of exp(entropy), as fairseq (eps 1e-7)."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(dim=-1)).sum()


class GumbelVectorQuantizer(nn.Module):
    """Straight-through Gumbel-softmax product quantizer (see the module doc).

    Args:
        input_dim: C, channels of the frames to quantize.
        num_groups: G codebooks.
        num_entries: V entries per codebook.
        code_dim: width of a quantized frame, a multiple of G.
        start_temperature: temperature at step 0.
        end_temperature: floor of the annealed temperature.
        temperature_decay: per-step decay; see :meth:`set_step`.
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_groups: int = 1,
        num_entries: int = 1024,
        code_dim: int = 256,
        start_temperature: float = 2.0,
        end_temperature: float = 0.1,
        temperature_decay: float = 0.999995,
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        _check(
            num_groups=num_groups,
            num_entries=num_entries,
            code_dim=code_dim,
            start_temperature=start_temperature,
            end_temperature=end_temperature,
            temperature_decay=temperature_decay,
        )
        self.input_dim = input_dim
        self.num_groups = num_groups
        self.num_entries = num_entries
        self.code_dim = code_dim
        self.start_temperature = start_temperature
        self.end_temperature = end_temperature
        self.temperature_decay = temperature_decay
        self.temperature = start_temperature
        self.proj = nn.Linear(input_dim, num_groups * num_entries)
        self.codebook = nn.Parameter(
            torch.empty(1, num_groups * num_entries, code_dim // num_groups)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq's initialisation: N(0, 1) projection, zero bias, U[0, 1) entries.
        nn.init.normal_(self.proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.proj.bias)
        nn.init.uniform_(self.codebook)

    def temperature_at(self, step: int) -> float:
        """Temperature of this quantizer's schedule at ``step`` (pure; changes nothing)."""
        return gumbel_temperature(
            step,
            start=self.start_temperature,
            end=self.end_temperature,
            decay=self.temperature_decay,
        )

    def set_step(self, step: int) -> None:
        """Set the temperature for training step ``step`` (call every step and on resume)."""
        self.temperature = self.temperature_at(step)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, num_groups={self.num_groups}, "
            f"num_entries={self.num_entries}, code_dim={self.code_dim}, "
            f"temperature={self.temperature:.4g}"
        )

    def _gumbel_hard(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Straight-through Gumbel-softmax one-hots of float (..., V) logits."""
        # Uniforms kept inside (0, 1): F.gumbel_softmax can draw an infinite noise.
        tiny = torch.finfo(logits.dtype).tiny
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        noise = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))
        soft = torch.softmax((logits + noise) / self.temperature, dim=-1)
        hard = F.one_hot(soft.argmax(dim=-1), self.num_entries).to(soft.dtype)
        return hard - soft.detach() + soft

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> QuantizerOutput:
        """Quantize frames.

        Args:
            x: (N, T, C) frames.
            valid: bool (N, T), True on frames to count in the usage statistics (None: all).
                Other frames are quantized from zeros (so garbage there cannot make NaNs);
                their outputs mean nothing.
            generator: source of the Gumbel noise (training only).

        Returns:
            :class:`QuantizerOutput`.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"x must be (N, T, {self.input_dim}), got shape {tuple(x.shape)}")
        n, t, _ = x.shape
        g, v = self.num_groups, self.num_entries
        if valid is None:
            valid = torch.ones(n, t, dtype=torch.bool, device=x.device)
        elif valid.shape != (n, t) or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be bool ({n}, {t}), got {valid.dtype} {tuple(valid.shape)}"
            )
        x = x.masked_fill(~valid[:, :, None], 0.0)
        logits = self.proj(x).view(n, t, g, v)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        flat = logits.to(dtype).reshape(n * t, g, v)
        weights = valid.reshape(n * t, 1, 1).to(flat.dtype)
        frames = valid.sum()
        denom = frames.clamp(min=1).to(flat.dtype)

        code_ids = flat.argmax(dim=-1)  # (NT, G)
        hard = F.one_hot(code_ids, v).to(flat.dtype)
        with torch.no_grad():
            hard_probs = (hard * weights).sum(dim=0) / denom
            code_perplexity = _perplexity(hard_probs)
            used = hard_probs > 0
            num_used = used.sum()
        avg_probs = (torch.softmax(flat, dim=-1) * weights).sum(dim=0) / denom
        prob_perplexity = _perplexity(avg_probs)

        codebook = self.codebook.view(g, v, -1)
        if self.training:
            onehot = self._gumbel_hard(flat, generator).to(codebook.dtype)
            sampled_ids = onehot.detach().argmax(dim=-1)
            quantized = torch.einsum("mgv,gvd->mgd", onehot, codebook)
        else:
            sampled_ids = code_ids
            quantized = codebook[torch.arange(g, device=x.device)[None, :], code_ids]
        return QuantizerOutput(
            quantized=quantized.reshape(n, t, self.code_dim),
            code_ids=code_ids.view(n, t, g),
            sampled_ids=sampled_ids.view(n, t, g),
            logits=logits,
            code_perplexity=code_perplexity,
            prob_perplexity=prob_perplexity,
            diversity_loss=(g * v - prob_perplexity) / (g * v),
            temperature=self.temperature,
            num_used_codes=num_used,
            used_fraction=num_used.to(flat.dtype) / (g * v),
            num_frames=frames.detach(),
            num_groups=g,
            num_entries=v,
        )


def create_gumbel_quantizer(input_dim: int, config: QuantizerConfig) -> GumbelVectorQuantizer:
    """Build a :class:`GumbelVectorQuantizer` for ``input_dim``-channel frames from ``config``."""
    config.validate()
    return GumbelVectorQuantizer(
        input_dim,
        num_groups=config.num_groups,
        num_entries=config.num_entries,
        code_dim=config.code_dim,
        start_temperature=config.start_temperature,
        end_temperature=config.end_temperature,
        temperature_decay=config.temperature_decay,
    )


def collapse_warning(
    output: QuantizerOutput,
    *,
    min_used_fraction: float = 0.1,
    min_perplexity: float = 1.5,
) -> str | None:
    """A message when the codebook looks collapsed, else None (for the recipe to log).

    Collapsed means either few codes in use, fewer than ``min_used_fraction`` of the codes
    the batch *could* use (``G * min(V, frames)``: a 50-frame batch cannot use 1024 codes),
    or a per-group code perplexity below ``min_perplexity`` (one code takes nearly every
    frame).  Batches of fewer than 2 valid frames say nothing.  Syncs with the device.
    """
    frames = int(output.num_frames)
    g, v = output.num_groups, output.num_entries
    if frames < 2 or v < 2:
        return None
    used = int(output.num_used_codes)
    reachable = g * min(v, frames)
    per_group = float(output.code_perplexity) / g
    reasons = []
    if used < min_used_fraction * reachable:
        reasons.append(
            f"{used} of {g * v} codes used ({used / reachable:.1%} of the {reachable} "
            f"reachable in {frames} frames, threshold {min_used_fraction:.0%})"
        )
    if per_group < min(min_perplexity, min(v, frames)):
        reasons.append(f"code perplexity {per_group:.3g} per group (< {min_perplexity:g})")
    if not reasons:
        return None
    return (
        f"quantizer codebook collapse: {'; '.join(reasons)}; temperature "
        f"{output.temperature:.3g}, prob perplexity {float(output.prob_perplexity.detach()):.4g} of {g * v}"
    )
