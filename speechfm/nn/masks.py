"""Padding and chunked-attention masks.

Convention: a *valid* mask is ``True`` where a frame holds data, a *pad* mask is ``True``
where it is padding, and an *attention* mask is ``True`` where a query may attend to a key
(the convention of :func:`torch.nn.functional.scaled_dot_product_attention`).

Chunked attention (WeNet/icefall streaming): frames are cut into chunks of ``chunk_size``
frames; a query in chunk ``c`` (frames ``[c * chunk_size, (c + 1) * chunk_size)``) sees every
key of its own chunk, of earlier chunks, and nothing later.  ``left_context`` limits how far
back, in frames, counted from the start of the query's chunk (``-1``: unlimited).  This is
exactly what a chunk-by-chunk streaming forward with a key/value cache of ``left_context``
frames computes.
"""

from __future__ import annotations

import torch

__all__ = [
    "attention_mask",
    "chunk_attention_mask",
    "lengths_to_valid_mask",
    "make_pad_mask",
    "sample_dynamic_chunk",
]


def lengths_to_valid_mask(x_lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Valid-frame mask from lengths.

    Args:
        x_lens: (N,) int64 number of valid frames per sequence.
        max_len: T; defaults to ``x_lens.max()``.

    Returns:
        (N, T) bool, True on frames ``t < x_lens[n]``.
    """
    if max_len is None:
        max_len = int(x_lens.max()) if x_lens.numel() else 0
    t = torch.arange(max_len, device=x_lens.device)
    return t.unsqueeze(0) < x_lens.unsqueeze(1)


def make_pad_mask(x_lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(N, T) bool, True on padding frames (the complement of :func:`lengths_to_valid_mask`)."""
    return ~lengths_to_valid_mask(x_lens, max_len)


def chunk_attention_mask(
    num_frames: int,
    chunk_size: int,
    left_context: int = -1,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Chunked attention mask for self-attention over ``num_frames`` frames.

    Args:
        num_frames: T.
        chunk_size: frames per chunk (> 0); ``-1`` or ``>= T`` means full context.
        left_context: frames before the start of a query's chunk that it may see;
            ``-1`` = all of them, ``0`` = only its own chunk.

    Returns:
        (T, T) bool, True where query ``i`` (row) may attend to key ``j`` (column).
    """
    idx = torch.arange(num_frames, device=device)
    if chunk_size <= 0 or chunk_size >= num_frames:
        chunk_size = max(num_frames, 1)
    start = (idx // chunk_size) * chunk_size
    end = start + chunk_size
    allowed = idx.unsqueeze(0) < end.unsqueeze(1)
    if left_context >= 0:
        allowed &= idx.unsqueeze(0) >= (start - left_context).unsqueeze(1)
    return allowed


def attention_mask(
    key_valid: torch.Tensor | None,
    chunk_mask: torch.Tensor | None,
) -> torch.Tensor | None:
    """Combine a key padding mask and a (Tq, Tk) chunk mask into one SDPA boolean mask.

    A query whose row would be entirely masked (a sequence of length 0) is allowed to see
    every key instead: its output is padding and is discarded, but an all ``-inf`` softmax
    row would turn into NaN and poison gradients through ``0 * NaN``.

    Args:
        key_valid: (N, Tk) bool, True on real keys, or None (no padding).
        chunk_mask: (Tq, Tk) bool, or None (full context).

    Returns:
        (N, 1, Tq, Tk) or (N, 1, 1, Tk) or (1, 1, Tq, Tk) bool, or None if nothing is masked.
    """
    if key_valid is None and chunk_mask is None:
        return None
    if key_valid is None:
        return chunk_mask.unsqueeze(0).unsqueeze(0)
    mask = key_valid[:, None, None, :]
    if chunk_mask is not None:
        mask = mask & chunk_mask[None, None]
    empty = ~mask.any(dim=-1, keepdim=True)
    return mask | empty


def sample_dynamic_chunk(
    num_frames: int,
    *,
    max_chunk: int = 25,
    full_context_prob: float = 0.5,
    dynamic_left_context: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """Draw a (chunk_size, left_context) pair for dynamic chunk training (one per batch).

    With probability ``full_context_prob`` the batch trains with full context (``-1, -1``),
    so that one model serves both offline and streaming decoding; otherwise the chunk size
    is uniform in ``[1, max_chunk]`` and the left context is either unlimited or, with
    ``dynamic_left_context``, a uniform whole number of chunks that fits in the utterance.

    Args:
        num_frames: T of the batch (frames after subsampling).

    Returns:
        (chunk_size, left_context) in frames; ``-1`` means unlimited.
    """
    if num_frames <= 1 or torch.rand((), generator=generator).item() < full_context_prob:
        return -1, -1
    chunk = int(torch.randint(1, max_chunk + 1, (), generator=generator))
    if not dynamic_left_context:
        return chunk, -1
    max_left_chunks = max((num_frames - 1) // chunk, 0)
    left_chunks = int(torch.randint(0, max_left_chunks + 1, (), generator=generator))
    return chunk, left_chunks * chunk
