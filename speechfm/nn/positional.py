"""Positional encodings: sinusoids (absolute and Transformer-XL relative), rotary, Shaw distances.

Everything here is computed on the fly from positions rather than read from a fixed-size
table, so no maximum length exists and streaming offsets are free.  Positions are in frames
(after subsampling).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "apply_rotary",
    "clipped_distance_index",
    "rel_shift",
    "relative_positions",
    "rotary_cos_sin",
    "sinusoidal_embedding",
]


def sinusoidal_embedding(
    positions: torch.Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Interleaved sinusoids ``[sin(p w_0), cos(p w_0), sin(p w_1), ...]``.

    ``w_k = base ** (-2k / dim)``.  Used for absolute positions (Vaswani et al.) and, with
    signed relative distances, for Transformer-XL relative positions.

    Args:
        positions: (L,) positions (any real values, may be negative).
        dim: embedding size C (even).
        dtype: computation dtype (float32, or float64 for float64 models).

    Returns:
        (L, C) of ``dtype``.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=dtype) * (-math.log(base) / dim)
    )
    angles = positions.to(dtype).unsqueeze(1) * inv_freq.unsqueeze(0)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)


def relative_positions(q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Signed distances ``k_len - 1, ..., -(q_len - 1)`` (query minus key), descending.

    This is the order :func:`rel_shift` expects; with ``k_len == q_len == T`` it is the
    familiar ``T - 1 ... -(T - 1)`` of Transformer-XL / ESPnet.

    Returns:
        (q_len + k_len - 1,) float32.
    """
    return torch.arange(k_len - 1, -q_len, -1, device=device, dtype=torch.float32)


def rel_shift(scores: torch.Tensor, k_len: int) -> torch.Tensor:
    """Turn scores against descending relative positions into a (query, key) matrix.

    The queries are the last ``q_len`` of the ``k_len`` keys (keys may include a cache
    before them), so query ``i`` sits at key index ``k_len - q_len + i`` and its distance to
    key ``j`` is ``k_len - q_len + i - j``.  With positions ordered as in
    :func:`relative_positions`, that distance is column ``q_len - 1 - i + j`` of row ``i``:
    a strided view, no copy or padding trick needed.

    Args:
        scores: (..., Tq, Tq + Tk - 1), columns over :func:`relative_positions`.
        k_len: Tk.

    Returns:
        (..., Tq, Tk) with ``out[..., i, j] = scores[..., i, Tq - 1 - i + j]``.
    """
    q_len, num_pos = scores.shape[-2], scores.shape[-1]
    if num_pos != q_len + k_len - 1:
        raise ValueError(f"rel_shift: expected {q_len + k_len - 1} positions, got {num_pos}")
    scores = scores.contiguous()
    lead = scores.shape[:-2]
    lead_strides = scores.stride()[:-2]
    return scores.as_strided(
        (*lead, q_len, k_len),
        (*lead_strides, num_pos - 1, 1),
        scores.storage_offset() + q_len - 1,
    )


def clipped_distance_index(
    q_len: int,
    k_len: int,
    left_max: int,
    right_max: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Indices into a Shaw ``relative_key`` distance table (HF Wav2Vec2-BERT convention).

    Queries are the last ``q_len`` of ``k_len`` keys.  The distance is ``key - query``,
    clipped to ``[-left_max, right_max]`` and shifted by ``left_max`` so it indexes a table
    of ``left_max + right_max + 1`` rows.

    Returns:
        (Tq, Tk) int64.
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=device).unsqueeze(1)
    k_pos = torch.arange(k_len, device=device).unsqueeze(0)
    return (k_pos - q_pos).clamp(-left_max, right_max) + left_max


def rotary_cos_sin(
    positions: torch.Tensor,
    head_dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for rotary embeddings (half-split / GPT-NeoX layout).

    Args:
        positions: (L,) absolute positions.
        head_dim: per-head size d (even).
        dtype: computation dtype.

    Returns:
        cos, sin: each (L, d) of ``dtype``, the frequency pattern repeated over both halves.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim
    )
    angles = positions.to(dtype).unsqueeze(1) * inv_freq.unsqueeze(0)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (N, H, L, d) by position: ``x * cos + rotate_half(x) * sin``.

    The product of a rotated query at position ``m`` and a rotated key at ``n`` depends only
    on ``m - n``, which is why rotated keys can be cached for streaming.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
