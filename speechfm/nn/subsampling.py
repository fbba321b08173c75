"""Front ends: frame subsampling of filterbank features, and spectrogram patches.

Every front end maps ``(x (N, T, F), x_lens (N,))`` to ``(y (N, T', C), y_lens (N,))`` with
exact length bookkeeping: ``y_lens[n]`` is the number of output frames that a sequence of
``x_lens[n]`` frames produces on its own, and those frames never depend on the padding
after it.  Lengths are int64.

Front ends without padding in time (:class:`Conv2dSubsampling`, :class:`FrameStacking`)
are *streamable*: output frame ``t`` depends on input frames
``[t * time_stride, t * time_stride + receptive_field)`` only, so a streaming caller can
feed raw frames chunk by chunk (see :mod:`speechfm.nn.streaming`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.nn.masks import lengths_to_valid_mask

__all__ = [
    "Conv2dSubsampling",
    "FrameStacking",
    "PatchEmbedding",
    "VGGSubsampling",
    "conv_output_length",
]


def conv_output_length(x_lens: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Frames out of an unpadded convolution: ``(L - kernel) // stride + 1``, never negative."""
    return torch.clamp(torch.div(x_lens - kernel, stride, rounding_mode="floor") + 1, min=0)


def _zero_padding(x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
    """Zero frames at ``t >= x_lens`` of (N, T, ...) so padding content can never leak."""
    valid = lengths_to_valid_mask(x_lens, x.shape[1])
    return x.masked_fill(~valid.view(*valid.shape, *([1] * (x.dim() - 2))), 0.0)


# (kernel, stride) in time and frequency of each conv layer, per subsampling factor.
_CONV2D_LAYERS = {
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}


class Conv2dSubsampling(nn.Module):
    """Conv2d subsampling by 4, 6 or 8 (ESPnet/WeNet style), then a linear projection.

    Stacked unpadded Conv2d + ReLU layers over (time, frequency), kernel/stride 3/2 (x4:
    two layers; x8: three) or 3/2 then 5/3 (x6).  Output length for L input frames:
    ``(L - receptive_field) // factor + 1`` (0 if L is shorter than the receptive field:
    7, 11 and 15 frames for x4, x6, x8).

    Args:
        in_dim: F (feature bins).
        out_dim: C.
        factor: 4, 6 or 8.
        channels: conv channels.

    Shapes: (N, T, F) -> (N, T', C).
    """

    def __init__(self, in_dim: int, out_dim: int, *, factor: int = 4, channels: int = 256) -> None:
        super().__init__()
        if factor not in _CONV2D_LAYERS:
            raise ValueError(f"conv2d subsampling factor must be 4, 6 or 8, got {factor}")
        layers: list[nn.Module] = []
        c_in, freq, rf, stride = 1, in_dim, 1, 1
        for kernel, s in _CONV2D_LAYERS[factor]:
            layers += [nn.Conv2d(c_in, channels, kernel, s), nn.ReLU()]
            c_in = channels
            freq = (freq - kernel) // s + 1
            rf += (kernel - 1) * stride
            stride *= s
        if freq <= 0:
            raise ValueError(f"in_dim {in_dim} is too small for conv2d subsampling x{factor}")
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * freq, out_dim)
        self.factor = factor
        self.receptive_field = rf
        self.time_stride = stride
        self.streamable = True

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        return conv_output_length(x_lens, self.receptive_field, self.time_stride)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _zero_padding(x, x_lens)
        if x.shape[1] < self.receptive_field:  # still yield one (invalid) frame, not a crash
            x = F.pad(x, (0, 0, 0, self.receptive_field - x.shape[1]))
        y = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        n, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(n, t, c * f))
        return y, self.output_lengths(x_lens)


class VGGSubsampling(nn.Module):
    """VGG-style x4 subsampling: two blocks of (conv3x3 + ReLU) x2 + max-pool 2 (ceil).

    Convolutions pad by one frame, so unlike :class:`Conv2dSubsampling` no frame is lost:
    ``T' = ceil(ceil(L / 2) / 2)``.  To keep outputs independent of batch padding, padded
    frames are zeroed before every convolution and pool, which makes each sequence see
    exactly the zero padding it would see alone (ReLU outputs are >= 0, so zeros never win a
    max-pool over a real value).  Not streamable (each conv looks one frame ahead).

    Args:
        in_dim: F.
        out_dim: C.
        channels: channels of the two blocks.

    Shapes: (N, T, F) -> (N, T', C).
    """

    def __init__(self, in_dim: int, out_dim: int, *, channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        c1, c2 = channels
        self.block1 = nn.ModuleList([nn.Conv2d(1, c1, 3, 1, 1), nn.Conv2d(c1, c1, 3, 1, 1)])
        self.block2 = nn.ModuleList([nn.Conv2d(c1, c2, 3, 1, 1), nn.Conv2d(c2, c2, 3, 1, 1)])
        freq = math.ceil(math.ceil(in_dim / 2) / 2)
        self.out = nn.Linear(c2 * freq, out_dim)
        self.factor = 4
        self.time_stride = 4
        self.receptive_field = 0  # not meaningful: padded convolutions
        self.streamable = False

    @staticmethod
    def output_lengths(x_lens: torch.Tensor) -> torch.Tensor:
        half = torch.div(x_lens + 1, 2, rounding_mode="floor")
        return torch.div(half + 1, 2, rounding_mode="floor")

    @staticmethod
    def _mask(y: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        valid = lengths_to_valid_mask(lens, y.shape[2])
        return y.masked_fill(~valid[:, None, :, None], 0.0)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = _zero_padding(x, x_lens).unsqueeze(1)  # (N, 1, T, F)
        lens = x_lens
        for block in (self.block1, self.block2):
            for conv in block:
                y = self._mask(torch.relu(conv(y)), lens)
            y = F.max_pool2d(y, 2, ceil_mode=True)
            lens = torch.div(lens + 1, 2, rounding_mode="floor")
        n, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(n, t, c * f))
        return y, lens


class FrameStacking(nn.Module):
    """Stack ``stride`` consecutive frames into one (w2v-BERT 2.0: 80-dim fbank -> 160).

    Output frame ``t`` is ``concat(x[t*s], ..., x[t*s + s - 1])``.  Length rule:
    ``mode="floor"`` (the default, as w2v-BERT 2.0's feature extractor) drops a trailing
    partial stack: ``T' = L // s``; ``mode="ceil"`` keeps it, zero-filled: ``T' = ceil(L/s)``.
    With ``out_dim`` set, a LayerNorm over the stacked features and a linear projection
    follow (w2v-BERT 2.0's feature projection).

    Args:
        in_dim: F.
        stride: s.
        out_dim: C after projection, or None to return the stacked (s * F) features.
        mode: ``"floor"`` or ``"ceil"``.
        eps: LayerNorm epsilon.

    Shapes: (N, T, F) -> (N, T', s * F or C).
    """

    def __init__(
        self,
        in_dim: int,
        *,
        stride: int = 2,
        out_dim: int | None = None,
        mode: str = "floor",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"stacking stride must be >= 1, got {stride}")
        if mode not in ("floor", "ceil"):
            raise ValueError(f"stacking mode must be 'floor' or 'ceil', got {mode!r}")
        self.stride = stride
        self.mode = mode
        self.factor = stride
        self.time_stride = stride
        self.receptive_field = stride
        self.streamable = True
        stacked = in_dim * stride
        if out_dim is None:
            self.norm = None
            self.proj = None
        else:
            self.norm = nn.LayerNorm(stacked, eps=eps)
            self.proj = nn.Linear(stacked, out_dim)

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        if self.mode == "floor":
            return torch.div(x_lens, self.stride, rounding_mode="floor")
        return torch.div(x_lens + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _zero_padding(x, x_lens)
        n, t, f = x.shape
        rem = t % self.stride
        if rem and self.mode == "floor":
            x = x[:, : t - rem]
        elif rem:
            x = F.pad(x, (0, 0, 0, self.stride - rem))
        y = x.reshape(n, -1, self.stride * f)
        if self.proj is not None:
            y = self.proj(self.norm(y))
        return y, self.output_lengths(x_lens)


class PatchEmbedding(nn.Module):
    """Spectrogram patches for spectrogram transformers (AST / ASiT).

    A Conv2d with kernel ``patch`` and stride ``stride`` over (time, frequency) cuts the
    spectrogram into possibly overlapping patches (``stride < patch``) and projects each to
    C.  Patches are flattened time-major (all frequency patches of time step 0 first), so
    the patches that lie entirely in the valid frames form a prefix of length
    ``((L - patch_t) // stride_t + 1) * P_f``.

    Args:
        in_dim: F (frequency bins).
        dim: C.
        patch: (time, frequency) patch size.
        stride: (time, frequency) stride; AST uses (16, 16) patches with stride (10, 10).

    Returns (on call):
        patches: (N, P_t * P_f, C).
        p_lens: (N,) int64 number of valid patches.
        grid: (P_t, P_f) patch grid shape of this batch.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        patch: tuple[int, int] = (16, 16),
        stride: tuple[int, int] = (10, 10),
    ) -> None:
        super().__init__()
        self.patch = tuple(patch)
        self.stride = tuple(stride)
        self.num_freq_patches = (in_dim - self.patch[1]) // self.stride[1] + 1
        if self.num_freq_patches <= 0:
            raise ValueError(f"in_dim {in_dim} is smaller than the patch height {self.patch[1]}")
        self.proj = nn.Conv2d(1, dim, self.patch, self.stride)

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        return conv_output_length(x_lens, self.patch[0], self.stride[0]) * self.num_freq_patches

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        x = _zero_padding(x, x_lens)
        if x.shape[1] < self.patch[0]:
            x = F.pad(x, (0, 0, 0, self.patch[0] - x.shape[1]))
        y = self.proj(x.unsqueeze(1))  # (N, C, P_t, P_f)
        n, c, pt, pf = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, pt * pf, c)
        return y, self.output_lengths(x_lens), (pt, pf)
