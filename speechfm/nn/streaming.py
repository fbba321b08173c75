"""State and helpers for chunk-by-chunk streaming of a Conformer encoder.

Streaming happens at two levels:

1. The front end: raw feature frames arrive in pieces of any size.  A streamable front end
   (no padding in time) computes output frame ``t`` from raw frames
   ``[t * stride, t * stride + receptive_field)``, so the raw frames are buffered until
   they hold the next whole chunk's outputs, and the front end then runs on exactly those
   ``(chunk_size - 1) * stride + receptive_field`` frames (:func:`chunk_frames`), as the
   ONNX streaming export does: the computation does not depend on how the frames were
   split into calls. :func:`front_end_flush` runs it over what is left at the end.
2. The blocks: each chunk of ``chunk_size`` front-end outputs attends to itself and to a
   key/value cache of the last ``left_context`` frames per layer, and its causal
   convolutions continue from a cache of ``kernel - 1`` frames.  This equals the
   full-utterance forward with the matching chunked attention mask.

Streams in a batch advance in lockstep: every call but the last carries the same number of
frames for all streams; the last (``final=True``) may end each stream at its own length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["StreamingState", "chunk_frames", "front_end_flush", "trim_kv_cache"]


@dataclass
class StreamingState:
    """Everything a streaming encoder carries between calls.

    Attributes:
        chunk_size: frames (after subsampling) per attention chunk.
        left_context: cached frames per layer; -1 keeps everything.
        attn_caches: per layer (keys, values), each (N, H, Tc, d).
        conv_caches: per layer (N, C, kernel - 1) GLU outputs of the last frames.
        processed: frames (after subsampling) already through the blocks.
        raw_buffer: (N, t, F) raw frames not yet through the front end (the start of the
            next chunk's), or None.
        finished: True after the final call.
        pos_memos: per layer, a memo of the attention's positional tables by query and
            key lengths (see
            :meth:`~speechfm.nn.attention.MultiHeadSelfAttention.position_bias`): every
            whole chunk has the same lengths, so its table is computed once. The encoder
            shares them between its streams while its attention weights are unchanged.

    Like the caches, the memos hold values computed from the model's weights: a state
    belongs to the weights it started with.
    """

    chunk_size: int
    left_context: int
    attn_caches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    conv_caches: list[torch.Tensor] = field(default_factory=list)
    processed: int = 0
    raw_buffer: torch.Tensor | None = None
    finished: bool = False
    pos_memos: list[dict] = field(default_factory=list)


def trim_kv_cache(
    kv: tuple[torch.Tensor, torch.Tensor], left_context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``left_context`` frames of (keys, values) (N, H, T, d); -1 keeps all."""
    if left_context < 0:
        return kv
    k, v = kv
    start = k.shape[2] - left_context
    return k[:, :, start:], v[:, :, start:]


def front_end_flush(
    front_end: nn.Module, frames: torch.Tensor, lens: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The front end over the raw frames left at the end of a stream (fewer than a chunk's).

    Args:
        front_end: module with ``streamable``, called as ``front_end(x, x_lens) -> (y, y_lens)``.
        frames: (N, t, F) the raw frames not yet through the front end.
        lens: (N,) valid frames per stream, or None (all ``t``).

    Returns:
        y: (N, t', C) every output frame they complete, or None if there is none.
        y_lens: (N,) valid output frames per stream, or None.
    """
    if not getattr(front_end, "streamable", False):
        raise ValueError(f"{type(front_end).__name__} pads in time and cannot stream exactly")
    n = frames.shape[0]
    if lens is None:
        lens = torch.full((n,), frames.shape[1], dtype=torch.int64, device=frames.device)
    y, y_lens = front_end(frames, lens.to(torch.int64))
    keep = int(y_lens.max()) if n else 0
    return (y[:, :keep], y_lens) if keep else (None, None)


def chunk_frames(front_end: nn.Module, chunk_size: int) -> tuple[int, int]:
    """Raw frames per chunk of a streamable front end: ``(window, shift)``.

    The ``chunk_size`` outputs of a chunk read ``window = (chunk_size - 1) * stride +
    receptive_field`` raw frames, and the next chunk starts ``shift = chunk_size * stride``
    frames later (the windows overlap by ``receptive_field - stride`` frames).
    """
    if not getattr(front_end, "streamable", False):
        raise ValueError(f"{type(front_end).__name__} pads in time and cannot stream exactly")
    stride = int(front_end.time_stride)
    return (chunk_size - 1) * stride + int(front_end.receptive_field), chunk_size * stride
