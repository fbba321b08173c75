"""The shared Conformer encoder: front end, Conformer blocks, streaming and adapters
(optionally followed by a length adapter)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from speechfm.nn.adapters import CONFORMER_POINTS, AdapterContext, AdapterHost
from speechfm.nn.conformer import ConformerBlock
from speechfm.nn.length_adapter import LengthAdapter
from speechfm.nn.masks import (
    attention_mask,
    chunk_attention_mask,
    lengths_to_valid_mask,
    sample_dynamic_chunk,
)
from speechfm.nn.positional import sinusoidal_embedding
from speechfm.nn.streaming import StreamingState, chunk_frames, front_end_flush, trim_kv_cache

__all__ = ["ConformerEncoder"]


class ConformerEncoder(AdapterHost, nn.Module):
    """Front end + Conformer blocks (+ optional final LayerNorm) (+ optional length adapter).

    Args:
        front_end: maps ``(x (N, T, F), x_lens)`` to ``(y (N, T', dim), y_lens)`` (see
            :mod:`speechfm.nn.subsampling`).
        blocks: the Conformer blocks.
        dim: C.
        abs_positions: add sinusoidal absolute positions after the front end ("abs").
        input_dropout: dropout on the front-end output.
        final_norm: LayerNorm after the last block.
        eps: LayerNorm epsilon.
        chunk_size: default attention chunk (frames after subsampling); -1 = full.
        left_context: default left context in frames; -1 = unlimited.
        dynamic_chunk: draw chunk size (and maybe left context) per training batch.
        dynamic_chunk_max: largest chunk drawn.
        dynamic_full_prob: probability of full context when drawing.
        dynamic_left_context: also draw a left context.
        gradient_checkpointing: recompute blocks in backward (training only).
        length_adapter: run after the blocks (and the final norm): it shortens the output
            (lengths as :meth:`LengthAdapter.output_lengths`) and may change its width
            (:attr:`output_dim`).  An encoder with one cannot stream.
    """

    adapter_points = CONFORMER_POINTS
    default_adapter_points = ("after_block",)

    def __init__(
        self,
        front_end: nn.Module,
        blocks: Iterable[ConformerBlock],
        *,
        dim: int,
        abs_positions: bool = False,
        input_dropout: float = 0.0,
        final_norm: bool = False,
        eps: float = 1e-5,
        chunk_size: int = -1,
        left_context: int = -1,
        dynamic_chunk: bool = False,
        dynamic_chunk_max: int = 25,
        dynamic_full_prob: float = 0.5,
        dynamic_left_context: bool = False,
        gradient_checkpointing: bool = False,
        length_adapter: LengthAdapter | None = None,
    ) -> None:
        super().__init__()
        self.front_end = front_end
        self.blocks = nn.ModuleList(blocks)
        self.dim = dim
        self.abs_positions = abs_positions
        self.input_dropout = nn.Dropout(input_dropout)
        self.final_norm = nn.LayerNorm(dim, eps=eps) if final_norm else None
        self.chunk_size = chunk_size
        self.left_context = left_context
        self.dynamic_chunk = dynamic_chunk
        self.dynamic_chunk_max = dynamic_chunk_max
        self.dynamic_full_prob = dynamic_full_prob
        self.dynamic_left_context = dynamic_left_context
        self.gradient_checkpointing = gradient_checkpointing
        self.length_adapter = length_adapter
        self._pos_memos: tuple[tuple, list[dict]] | None = None  # see _shared_pos_memos

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def output_dim(self) -> int:
        """Width of :meth:`forward`'s ``out``: the length adapter's, else :attr:`dim` (the
        blocks' width, that of ``return_layers``)."""
        return self.dim if self.length_adapter is None else self.length_adapter.out_dim

    def layer_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """(N,) int64 frames of the blocks' outputs (``return_layers``) for ``x_lens``
        input frames: :meth:`output_lengths` without the length adapter."""
        return self.front_end.output_lengths(x_lens.to(torch.int64))

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """(N,) int64 encoder output frames for ``x_lens`` input frames (no forward needed)."""
        lens = self.layer_lengths(x_lens)
        if self.length_adapter is not None:
            lens = self.length_adapter.output_lengths(lens)
        return lens

    def _no_streaming(self) -> None:
        if self.length_adapter is not None:
            raise ValueError(
                "an encoder with a length adapter (length_adapter) cannot stream: its strided "
                "convolutions and attention need the whole utterance"
            )

    # ------------------------------------------------------------------ full forward

    def _chunking(self, num_frames: int, chunk_size: int | None, left_context: int | None):
        if chunk_size is None:
            if self.training and self.dynamic_chunk:
                return sample_dynamic_chunk(
                    num_frames,
                    max_chunk=self.dynamic_chunk_max,
                    full_context_prob=self.dynamic_full_prob,
                    dynamic_left_context=self.dynamic_left_context,
                )
            chunk_size = self.chunk_size
        return chunk_size, self.left_context if left_context is None else left_context

    def _embed(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        if self.abs_positions:
            positions = torch.arange(offset, offset + x.shape[1], device=x.device)
            table = torch.float64 if x.dtype == torch.float64 else torch.float32
            x = x + sinusoidal_embedding(positions, self.dim, dtype=table).to(x.dtype)
        return self.input_dropout(x)

    def _layer_indices(self, return_layers: Sequence[int]) -> list[int]:
        out = []
        for i in return_layers:
            j = i + self.num_layers + 1 if i < 0 else i
            if not 0 <= j <= self.num_layers:
                raise ValueError(f"layer {i} out of range for {self.num_layers} blocks")
            out.append(j)
        return out

    def forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        chunk_size: int | None = None,
        left_context: int | None = None,
        return_layers: Sequence[int] | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
        frame_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        """Encode a padded batch.

        Args:
            x: (N, T, F) features (fbank).
            x_lens: (N,) int64 valid frames per utterance.
            chunk_size: attention chunk in output frames (-1 = full); None = the encoder's
                default, or a random draw in training with dynamic chunks.
            left_context: left context in output frames (-1 = unlimited); None = default.
            return_layers: also return these layers' outputs: 0 is the block input (front
                end output), ``i`` the output of block ``i``; negative counts from the end
                (-1 = last block, before the optional final norm and length adapter).
            language: the batch's language, selecting language-keyed adapters.
            adapters: names of the adapters to run (None = all, ``()`` = none).
            frame_hook: ``f(x (N, T', C), x_lens) -> x``, applied to the front-end output
                before the blocks: where self-supervised recipes read the unmasked frames
                and put mask embeddings in (w2v-BERT, wav2vec 2.0, HuBERT).

        Returns:
            out: (N, T', C), zero on padded frames (with a length adapter: its output,
                (N, T'', :attr:`output_dim`)).
            out_lens: (N,) int64 (:meth:`output_lengths`).
            layers (only with ``return_layers``): list of (N, T', C), padding zeroed;
                always the blocks' frames (:meth:`layer_lengths`).
        """
        x, x_lens = self.front_end(x, x_lens.to(torch.int64))
        if frame_hook is not None:
            x = frame_hook(x, x_lens)
        n, t, _ = x.shape
        chunk, left = self._chunking(t, chunk_size, left_context)
        padded = bool((x_lens < t).any())
        valid = lengths_to_valid_mask(x_lens, t) if padded else None
        # One chunk spanning the utterance is full context whatever the left context.
        chunk_mask = None
        if 0 < chunk < t:
            chunk_mask = chunk_attention_mask(t, chunk, left, device=x.device)
        mask = attention_mask(valid, chunk_mask)
        ctx = AdapterContext.make(adapters, language)

        wanted = self._layer_indices(return_layers) if return_layers is not None else []
        layers: dict[int, torch.Tensor] = {}
        x = self._embed(x, 0)
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        if 0 in wanted:
            layers[0] = x
        for i, block in enumerate(self.blocks, start=1):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, valid, ctx, use_reentrant=False)
            else:
                x = block(x, mask, valid, ctx)
            if i in wanted:
                layers[i] = x if valid is None else x.masked_fill(~valid.unsqueeze(-1), 0.0)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        if self.length_adapter is not None:
            x, x_lens = self.length_adapter(x, x_lens)
        if return_layers is None:
            return x, x_lens
        return x, x_lens, [layers[j] for j in wanted]

    # ------------------------------------------------------------------ streaming

    def init_streaming_state(
        self,
        batch_size: int,
        *,
        chunk_size: int | None = None,
        left_context: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> StreamingState:
        """Fresh state for :meth:`streaming_forward` / :meth:`forward_chunk`.

        Args:
            batch_size: N streams.
            chunk_size: frames after subsampling per chunk (> 0); default: the encoder's.
            left_context: cached frames per layer, -1 = unlimited; default: the encoder's.

        Raises:
            ValueError: the encoder has a length adapter, or non-causal convolutions.
        """
        self._no_streaming()
        chunk = self.chunk_size if chunk_size is None else chunk_size
        left = self.left_context if left_context is None else left_context
        if chunk <= 0:
            raise ValueError(f"streaming needs a positive chunk_size, got {chunk}")
        state = StreamingState(chunk_size=chunk, left_context=left,
                               pos_memos=self._shared_pos_memos())
        for block in self.blocks:
            if not block.conv.causal:
                raise ValueError("streaming needs causal convolutions (conv_causal=True)")
            attn = block.attn
            cached = max(left, 0)
            shape = (batch_size, attn.num_heads, cached, attn.head_dim)
            k = torch.zeros(shape, device=device, dtype=dtype)
            state.attn_caches.append((k, torch.zeros_like(k)))
            state.conv_caches.append(
                torch.zeros(batch_size, self.dim, block.conv.kernel - 1, device=device, dtype=dtype)
            )
        return state

    def _shared_pos_memos(self) -> list[dict]:
        """Per-layer memos of the attention's positional tables for new streaming states.

        The tables depend on the lengths and the attention weights only, so the streams of
        one encoder share the memos (each table is computed once, not once per stream) for
        as long as those weights are the ones they were computed from: any change to them
        (an optimiser step, ``load_state_dict``, new storage) starts fresh memos.
        """
        params = [p for block in self.blocks for p in block.attn.parameters()]
        if any(p.is_inference() for p in params):  # no version counter to watch
            return [{} for _ in self.blocks]
        weights = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._pos_memos is None or self._pos_memos[0] != weights:
            self._pos_memos = (weights, [{} for _ in self.blocks])
        return self._pos_memos[1]

    @torch.no_grad()
    def forward_chunk(
        self,
        x: torch.Tensor,
        state: StreamingState,
        x_lens: torch.Tensor | None = None,
        *,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
    ) -> tuple[torch.Tensor, StreamingState]:
        """Run the blocks on one chunk of front-end output (encoder-level streaming).

        Args:
            x: (N, t, C) front-end output, ``t <= state.chunk_size``; a chunk shorter than
                ``chunk_size`` must be a stream's last.
            state: from :meth:`init_streaming_state`, updated in place and returned.
            x_lens: (N,) valid frames of this chunk (only the last chunk may be partial).

        Returns:
            (N, t, C) outputs (padding zeroed) and the state.
        """
        self._no_streaming()
        if self.training:
            raise RuntimeError("streaming runs in eval mode; call encoder.eval() first")
        n, t, _ = x.shape
        if t > state.chunk_size:
            raise ValueError(f"chunk of {t} frames exceeds chunk_size {state.chunk_size}")
        offset = state.processed
        valid = None if x_lens is None else lengths_to_valid_mask(x_lens.to(torch.int64), t)
        ctx = AdapterContext.make(adapters, language)
        x = self._embed(x, offset)
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        cached = state.attn_caches[0][0].shape[2] if state.attn_caches else 0
        mask = None  # every cached and chunk frame real: nothing to mask
        if valid is not None or offset < cached:
            cache_valid = torch.arange(offset - cached, offset, device=x.device) >= 0
            chunk_valid = (
                valid if valid is not None else torch.ones(n, t, dtype=torch.bool, device=x.device)
            )
            key_valid = torch.cat((cache_valid.unsqueeze(0).expand(n, -1), chunk_valid), dim=1)
            mask = attention_mask(key_valid, None)
        memos: list[dict | None] = list(state.pos_memos) or [None] * len(self.blocks)
        for i, block in enumerate(self.blocks):
            x, kv, conv_cache = block.streaming_step(
                x, mask, valid, state.attn_caches[i], state.conv_caches[i], offset, ctx,
                pos_memo=memos[i],
            )
            state.attn_caches[i] = trim_kv_cache(kv, state.left_context)
            state.conv_caches[i] = conv_cache
        if self.final_norm is not None:
            x = self.final_norm(x)
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        state.processed += t
        return x, state

    def frames_to_next_chunk(self, state: StreamingState) -> int:
        """Raw feature frames :meth:`streaming_forward` still needs before it can output
        the next chunk; feeding fewer only buffers them (and since the outputs do not depend
        on how frames are split into calls, a caller may hold them back until then)."""
        window, _ = chunk_frames(self.front_end, state.chunk_size)
        have = 0 if state.raw_buffer is None else state.raw_buffer.shape[1]
        return max(window - have, 0)

    @torch.no_grad()
    def streaming_forward(
        self,
        x: torch.Tensor,
        state: StreamingState,
        x_lens: torch.Tensor | None = None,
        *,
        final: bool = False,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, StreamingState]:
        """Stream raw features: feed any number of frames, get every output now computable.

        Outputs come a whole chunk at a time (a chunk attends to all of itself): raw frames
        are buffered until they hold the next chunk's, then the front end and the blocks
        run on that chunk (the front end on exactly the raw frames its outputs read, so the
        result does not depend on how the frames were split into calls); ``final=True``
        flushes. The concatenated outputs equal ``forward(..., chunk_size, left_context)``
        on the whole utterance.

        Args:
            x: (N, t, F) new feature frames (t may be 0 or differ between calls).
            state: from :meth:`init_streaming_state`.
            x_lens: (N,) valid new frames; only the final call may have fewer than t.
            final: this is each stream's last call.

        Returns:
            out: (N, t', C) new outputs (t' may be 0).
            out_lens: (N,) valid new outputs.
            state: updated.
        """
        self._no_streaming()
        if state.finished:
            raise RuntimeError("this stream already received its final call")
        n, t = x.shape[0], x.shape[1]
        if not final and x_lens is not None and bool((x_lens != t).any()):
            raise ValueError("only the final call may carry fewer frames for some streams")
        chunk = state.chunk_size
        window, shift = chunk_frames(self.front_end, chunk)
        buffer = state.raw_buffer
        frames = x if buffer is None else torch.cat((buffer, x.to(buffer.dtype)), dim=1)
        # Raw frames valid in every stream (only a final call's x_lens can make them differ).
        ready = frames.shape[1]
        if x_lens is not None and n:
            ready -= t - int(x_lens.min())
        outs = []
        start = 0
        if ready >= window:
            lens = torch.full((n,), window, dtype=torch.int64, device=x.device)
            while ready - start >= window:
                y, _ = self.front_end(frames[:, start : start + window], lens)
                out, state = self.forward_chunk(
                    y[:, :chunk], state, language=language, adapters=adapters
                )
                outs.append(out)
                start += shift
        out_lens = torch.full((n,), len(outs) * chunk, dtype=torch.int64, device=x.device)
        rest = frames[:, start:]
        state.raw_buffer = rest
        if final:
            # The last, partial chunk(s): the front end over everything left, per-stream
            # lengths from the final call's x_lens.
            rest_lens = None if x_lens is None else x_lens.to(torch.int64) - t + rest.shape[1]
            y, y_lens = front_end_flush(self.front_end, rest, rest_lens)
            if y is not None and y_lens is not None:
                for done in range(0, y.shape[1], chunk):
                    piece = y[:, done : done + chunk]
                    lens = (y_lens - done).clamp(0, piece.shape[1])
                    out, state = self.forward_chunk(
                        piece, state, lens, language=language, adapters=adapters
                    )
                    outs.append(out)
                    out_lens += lens
            state.raw_buffer = None
            state.finished = True
        if outs:
            return torch.cat(outs, dim=1), out_lens, state
        return x.new_zeros(n, 0, self.dim), out_lens, state
