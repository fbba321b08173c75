"""SpecAugment (Park et al., 2019; adaptive time masks from Park et al., 2020).

Frequency masks blank bands of up to ``freq_mask_width`` channels; time masks blank spans
whose width (and, optionally, number) scale with each utterance's own length, so short and
long utterances are masked in the same proportion. An optional time warp stretches the
utterance around a random point. Everything happens only inside each utterance's
``x_lens`` frames; padding is neither masked nor counted. In eval mode the module is the
identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpecAugment(nn.Module):
    """Random time/frequency masking (and optional time warping) of (N, T, C) features.

    Args:
        num_freq_masks: frequency masks per utterance.
        freq_mask_width: maximum width F of a frequency mask in channels (width ~ U{0..F}).
        num_time_masks: maximum number of time masks per utterance.
        time_mask_multiplicity: adaptive count p_M: an utterance of L frames gets
            min(num_time_masks, floor(p_M * L)) masks; 0 gives every utterance
            num_time_masks masks.
        time_mask_max_frac: adaptive size p_S: a time mask is at most floor(p_S * L) frames.
        max_time_mask_width: optional absolute cap on a time mask's width in frames.
        time_warp: maximum warp distance W in frames; 0 (default) disables time warping.
        mask_value: value written into masked cells (0 suits mean-normalised features).
        p: probability that an utterance is augmented at all.
    """

    def __init__(
        self,
        *,
        num_freq_masks: int = 2,
        freq_mask_width: int = 27,
        num_time_masks: int = 10,
        time_mask_multiplicity: float = 0.04,
        time_mask_max_frac: float = 0.05,
        max_time_mask_width: int | None = None,
        time_warp: int = 0,
        mask_value: float = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        if num_freq_masks < 0 or freq_mask_width < 0 or num_time_masks < 0:
            raise ValueError("mask counts and widths must be >= 0")
        if not 0.0 <= time_mask_max_frac <= 1.0:
            raise ValueError(f"time_mask_max_frac must be in [0, 1], got {time_mask_max_frac}")
        if time_mask_multiplicity < 0:
            raise ValueError(f"time_mask_multiplicity must be >= 0, got {time_mask_multiplicity}")
        if max_time_mask_width is not None and max_time_mask_width < 0:
            raise ValueError(f"max_time_mask_width must be >= 0, got {max_time_mask_width}")
        if time_warp < 0:
            raise ValueError(f"time_warp must be >= 0, got {time_warp}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.num_time_masks = num_time_masks
        self.time_mask_multiplicity = time_mask_multiplicity
        self.time_mask_max_frac = time_mask_max_frac
        self.max_time_mask_width = max_time_mask_width
        self.time_warp = time_warp
        self.mask_value = mask_value
        self.p = p

    def extra_repr(self) -> str:
        return (
            f"freq={self.num_freq_masks}x{self.freq_mask_width}, time<={self.num_time_masks}x"
            f"{self.time_mask_max_frac:g}L (p_M={self.time_mask_multiplicity:g}), "
            f"warp={self.time_warp}, p={self.p:g}"
        )

    def forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Augment a padded batch.

        Args:
            x: (N, T, C) features.
            x_lens: int64 (N,) valid frames per utterance; defaults to T for all.
            generator: CPU torch.Generator for reproducible masks (global RNG if None).

        Returns:
            (N, T, C) tensor: ``x`` itself in eval mode, otherwise an augmented copy.
        """
        if not self.training:
            return x
        if x.dim() != 3:
            raise ValueError(f"SpecAugment expects (N, T, C), got shape {tuple(x.shape)}")
        n, t, c = x.shape
        if n == 0 or t == 0:
            return x
        if x_lens is None:
            lens = torch.full((n,), t, dtype=torch.int64)
        else:
            lens = x_lens.detach().to("cpu", torch.int64).clamp(0, t)
        apply = torch.rand(n, generator=generator) < self.p

        if self.time_warp > 0:
            x = self._time_warp(x, lens, apply, generator)

        # All randomness is drawn on the CPU so a seeded generator gives the same masks on
        # any device; the (N, T) and (N, C) masks are then built on x's device.
        ar_t = torch.arange(t)
        valid = ar_t[None, :] < lens[:, None]
        time_mask = torch.zeros(n, t, dtype=torch.bool)
        if self.num_time_masks > 0 and self.time_mask_max_frac > 0:
            lens_f = lens.to(torch.float64)
            max_w = torch.floor(self.time_mask_max_frac * lens_f).to(torch.int64)
            if self.max_time_mask_width is not None:
                max_w = max_w.clamp(max=self.max_time_mask_width)
            if self.time_mask_multiplicity > 0:
                count = torch.floor(self.time_mask_multiplicity * lens_f).to(torch.int64)
                count = count.clamp(max=self.num_time_masks)
            else:
                count = torch.full((n,), self.num_time_masks, dtype=torch.int64)
            k = self.num_time_masks
            u_w = torch.rand(n, k, generator=generator, dtype=torch.float64)
            u_s = torch.rand(n, k, generator=generator, dtype=torch.float64)
            widths = torch.floor(u_w * (max_w[:, None] + 1)).to(torch.int64)
            widths = torch.where(torch.arange(k)[None, :] < count[:, None], widths, 0)
            starts = torch.floor(u_s * (lens[:, None] - widths + 1).clamp(min=1)).to(torch.int64)
            time_mask = (
                (ar_t[None, None, :] >= starts[..., None])
                & (ar_t[None, None, :] < (starts + widths)[..., None])
            ).any(dim=1)
        freq_mask = torch.zeros(n, c, dtype=torch.bool)
        if self.num_freq_masks > 0 and self.freq_mask_width > 0:
            k = self.num_freq_masks
            ar_c = torch.arange(c)
            u_w = torch.rand(n, k, generator=generator, dtype=torch.float64)
            u_s = torch.rand(n, k, generator=generator, dtype=torch.float64)
            widths = torch.floor(u_w * (min(self.freq_mask_width, c) + 1)).to(torch.int64)
            starts = torch.floor(u_s * (c - widths + 1)).to(torch.int64)
            freq_mask = (
                (ar_c[None, None, :] >= starts[..., None])
                & (ar_c[None, None, :] < (starts + widths)[..., None])
            ).any(dim=1)
        mask = (time_mask[:, :, None] | freq_mask[:, None, :]) & valid[:, :, None]
        mask = mask & apply[:, None, None]
        return x.masked_fill(mask.to(x.device), self.mask_value)

    def _time_warp(
        self,
        x: torch.Tensor,
        lens: torch.Tensor,
        apply: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Stretch [0, w0) to [0, w0 + d) and squeeze the rest, per utterance (linear)."""
        w = self.time_warp
        n = x.shape[0]
        u_c = torch.rand(n, generator=generator, dtype=torch.float64)
        u_d = torch.rand(n, generator=generator, dtype=torch.float64)
        out = x.clone()
        for i in range(n):
            length = int(lens[i])
            if not bool(apply[i]) or length <= 2 * w + 1:
                continue
            center = w + int(u_c[i] * (length - 2 * w))  # in [w, length - w)
            dist = int(torch.floor(u_d[i] * (2 * w + 1))) - w  # in [-w, w]
            new_center = center + dist
            if new_center <= 0 or new_center >= length or dist == 0:
                continue
            seg = x[i, :length].transpose(0, 1).unsqueeze(0)  # (1, C, L)
            left = F.interpolate(
                seg[..., :center], size=new_center, mode="linear", align_corners=False
            )
            right = F.interpolate(
                seg[..., center:], size=length - new_center, mode="linear", align_corners=False
            )
            out[i, :length] = torch.cat([left, right], dim=-1)[0].transpose(0, 1)
        return out


from dataclasses import dataclass  # noqa: E402  (the config sits beside the module it builds)


@dataclass(kw_only=True)
class SpecAugmentConfig:
    """Settings of :class:`SpecAugment` (the defaults are icefall's/ESPnet's LibriSpeech ones)."""

    num_freq_masks: int = 2
    """Frequency masks per utterance."""
    freq_mask_width: int = 27
    """Widest frequency mask, in feature channels."""
    num_time_masks: int = 10
    """Most time masks per utterance."""
    time_mask_multiplicity: float = 0.04
    """An utterance of L frames gets min(num_time_masks, floor(this * L)) masks."""
    time_mask_max_frac: float = 0.05
    """A time mask spans at most this fraction of the utterance."""
    time_warp: int = 0
    """Largest time-warp distance in frames (0 = no warping)."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("num_freq_masks", "freq_mask_width", "num_time_masks", "time_warp"):
            if getattr(self, name) < 0:
                raise ValueError(f"specaug.{name} must be >= 0, got {getattr(self, name)}")
        if self.time_mask_multiplicity < 0:
            raise ValueError("specaug.time_mask_multiplicity must be >= 0, got "
                             f"{self.time_mask_multiplicity}")
        if not 0.0 <= self.time_mask_max_frac <= 1.0:
            raise ValueError(
                f"specaug.time_mask_max_frac must be in [0, 1], got {self.time_mask_max_frac}")

    def build(self) -> SpecAugment:
        """The :class:`SpecAugment` module these settings describe."""
        self.validate()
        return SpecAugment(
            num_freq_masks=self.num_freq_masks,
            freq_mask_width=self.freq_mask_width,
            num_time_masks=self.num_time_masks,
            time_mask_multiplicity=self.time_mask_multiplicity,
            time_mask_max_frac=self.time_mask_max_frac,
            time_warp=self.time_warp,
        )
