"""Export wrappers: speechfm models as the graphs sherpa-onnx runs.

Each wrapper holds (does not copy) the model's own submodules and computes exactly what
the model computes, in the tensor layout sherpa-onnx passes:

- :class:`OfflineEncoder`: fbank features (N, T, F) and lengths -> per-frame outputs and
  their lengths. With a CTC head it gives log-posteriors (sherpa-onnx's offline
  ``zipformer2_ctc`` model: ``x``, ``x_lens`` -> ``log_probs``, ``log_probs_len``); with the
  transducer joiner's ``encoder_proj`` the projected encoder output (the offline
  ``transducer`` encoder: ``x``, ``x_lens`` -> ``encoder_out``, ``encoder_out_lens``).
- :class:`StreamingEncoder`: one chunk of raw fbank frames plus the cached states of
  sherpa-onnx's online ``conformer`` transducer (icefall's streaming Conformer layout)
  -> projected encoder frames and the next states. See its docstring for the layout.
- :class:`TransducerDecoder` / :class:`TransducerJoiner`: the stateless predictor (with
  the joiner's ``decoder_proj``) and the joiner's output layer, as icefall exports them.

Normalisation (global CMVN or per-utterance statistics) runs inside the graphs, so a
runtime feeds plain log-mel fbank frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OfflineEncoder",
    "StreamingEncoder",
    "TransducerDecoder",
    "TransducerJoiner",
    "export_friendly_ops",
]


def _rel_shift_gather(scores: torch.Tensor, k_len: int) -> torch.Tensor:
    """:func:`speechfm.nn.positional.rel_shift` as a gather (``out[..., i, j] =
    scores[..., i, Tq - 1 - i + j]``): the strided view bakes the traced lengths into an
    ONNX graph, a gather over indices built from the tensors' sizes does not."""
    q_len = scores.shape[-2]
    i = torch.arange(q_len, device=scores.device).unsqueeze(1)
    j = torch.arange(k_len, device=scores.device).unsqueeze(0)
    index = (q_len - 1 - i + j).expand(*scores.shape[:-1], k_len)
    return torch.gather(scores, -1, index)


def _chunk_mask_traceable(num_frames: int, chunk_size: int, left_context: int = -1, *,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """:func:`speechfm.nn.masks.chunk_attention_mask` without its in-place ``&=`` (no ONNX
    symbolic) and without branching on the traced length (a chunk of ``T`` frames or more
    already allows every key)."""
    idx = torch.arange(num_frames, device=device)
    if chunk_size <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    start = torch.div(idx, chunk_size, rounding_mode="floor") * chunk_size
    allowed = idx.unsqueeze(0) < (start + chunk_size).unsqueeze(1)
    if left_context >= 0:
        allowed = allowed & (idx.unsqueeze(0) >= (start - left_context).unsqueeze(1))
    return allowed


@contextlib.contextmanager
def export_friendly_ops() -> Iterator[None]:
    """Swap in ONNX-traceable equivalents of ops whose eager form is shape-specialised or
    has no ONNX symbolic (:func:`rel_shift`, a strided view; the chunk mask's in-place
    ``&=``) while a graph is traced."""
    import speechfm.models.conformer.model as conformer_model
    import speechfm.nn.attention as attention

    saved = (attention.rel_shift, conformer_model.chunk_attention_mask)
    attention.rel_shift = _rel_shift_gather
    conformer_model.chunk_attention_mask = _chunk_mask_traceable
    try:
        yield
    finally:
        attention.rel_shift, conformer_model.chunk_attention_mask = saved


class OfflineEncoder(nn.Module):
    """Whole utterances: fbank features -> normalisation -> encoder -> ``head``.

    Args:
        model: a CTC or transducer model (``model.encoder`` is its
            :class:`~speechfm.models.conformer.speech_encoder.SpeechEncoder`).
        head: applied to every encoder frame: the CTC output layer, or the joiner's
            ``encoder_proj``.
        log_softmax: end with a log-softmax over the last axis (CTC log-posteriors).
        final_pass: a cascaded transducer's final (second-encoder) pass.
        chunk_size, left_context: chunked attention of the (first) encoder, in encoder
            frames (-1: full context / unlimited).

    Shapes: ``x`` (N, T, F) float, ``x_lens`` (N,) int64 -> (N, T', D), (N,) int64.
    """

    def __init__(self, model: Any, head: nn.Module, *, log_softmax: bool,
                 final_pass: bool = False, chunk_size: int = -1, left_context: int = -1) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.log_softmax = log_softmax
        self.final_pass = final_pass
        self.chunk_size = chunk_size
        self.left_context = left_context

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.model.encoder
        x_lens = x_lens.to(torch.int64)
        out, out_lens = encoder.conformer(encoder.normalize(x, x_lens), x_lens,
                                          chunk_size=self.chunk_size,
                                          left_context=self.left_context)[:2]
        if self.final_pass:
            out, out_lens = self.model.second_pass(out, out_lens)
        out = self.head(out)
        if self.log_softmax:
            out = torch.log_softmax(out, dim=-1)
        return out, out_lens


class StreamingEncoder(nn.Module):
    """One chunk of a stream through the causal encoder, in sherpa-onnx's online
    ``conformer`` layout (icefall's streaming Conformer).

    Every call takes ``T = (chunk_size - 1) * stride + receptive_field`` raw fbank frames
    starting at ``processed_lens`` (the runtime advances by ``decode_chunk_len =
    chunk_size * stride`` frames per call) and returns ``chunk_size`` encoder frames: the
    front end sees exactly the frames a whole-utterance pass gives those outputs.

    States (zeros at the start of a stream; the runtime stacks streams on axis 2):

    - ``attn_cache`` (num_layers, left_context, N, C): each block's attention input (after
      its LayerNorm) on the last ``left_context`` encoder frames; keys and values are
      recomputed from it in the graph (half the size of a key/value cache).
    - ``cnn_cache`` (num_layers, kernel - 1, N, C): each convolution module's GLU output
      on the last ``kernel - 1`` frames (the causal depthwise convolution's left context).
    - ``processed_lens`` (N,) int64: raw frames consumed before this chunk; cache frames
      before the stream's start are masked out of attention.

    The result equals the model's own streaming (and its chunked-attention whole-utterance
    forward) with the same ``chunk_size`` and ``left_context``.

    Args:
        encoder: the :class:`SpeechEncoder` (causal convolutions, a streamable front end).
        proj: applied to the output frames (the joiner's ``encoder_proj``).
        chunk_size: encoder frames per call (> 0).
        left_context: cached encoder frames per layer (> 0).
    """

    def __init__(self, encoder: Any, proj: nn.Module, *, chunk_size: int,
                 left_context: int) -> None:
        super().__init__()
        conformer = encoder.conformer
        front_end = conformer.front_end
        if chunk_size <= 0 or left_context <= 0:
            raise ValueError(f"streaming export needs chunk_size > 0 and left_context > 0, got "
                             f"{chunk_size} and {left_context}")
        self.encoder = encoder
        self.proj = proj
        self.chunk_size = chunk_size
        self.left_context = left_context
        self.stride = int(front_end.time_stride)
        self.receptive_field = int(front_end.receptive_field)
        self.num_layers = conformer.num_layers
        self.dim = conformer.dim
        self.kernel = conformer.blocks[0].conv.kernel

    @property
    def frames_per_call(self) -> int:
        """T: raw frames per call."""
        return (self.chunk_size - 1) * self.stride + self.receptive_field

    @property
    def frames_shift(self) -> int:
        """decode_chunk_len: raw frames the runtime advances per call."""
        return self.chunk_size * self.stride

    def init_states(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (attn_cache, cnn_cache) of ``batch_size`` streams."""
        return (torch.zeros(self.num_layers, self.left_context, batch_size, self.dim),
                torch.zeros(self.num_layers, self.kernel - 1, batch_size, self.dim))

    def forward(self, x: torch.Tensor, attn_cache: torch.Tensor, cnn_cache: torch.Tensor,
                processed_lens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, T, F) raw frames + states -> (N, chunk_size, J) projected frames + states."""
        from speechfm.nn.positional import sinusoidal_embedding

        conformer = self.encoder.conformer
        n = x.shape[0]
        if self.encoder.cmvn is not None:
            x = self.encoder.cmvn(x)
        lens = torch.full((n,), self.frames_per_call, dtype=torch.int64, device=x.device)
        y, _ = conformer.front_end(x, lens)
        y = y[:, : self.chunk_size]
        offset = torch.div(processed_lens.to(torch.int64), self.stride, rounding_mode="floor")
        frames = torch.arange(self.chunk_size, device=x.device)
        if conformer.abs_positions:
            pos = (offset.unsqueeze(1) + frames.unsqueeze(0)).flatten()
            y = y + sinusoidal_embedding(pos, self.dim).view(n, self.chunk_size, self.dim)
        # Cache frame j holds absolute frame offset - left_context + j: real once >= 0.
        cached = torch.arange(self.left_context, device=x.device) - self.left_context
        cache_valid = (offset.unsqueeze(1) + cached.unsqueeze(0)) >= 0
        key_valid = torch.cat((cache_valid, torch.ones_like(cache_valid[:, :1]).expand(
            n, self.chunk_size)), dim=1)
        mask = key_valid[:, None, None, :]
        next_attn, next_cnn = [], []
        for i, block in enumerate(conformer.blocks):
            y, attn_in, conv = _block_step(block, y, mask, attn_cache[i].transpose(0, 1),
                                           cnn_cache[i].permute(1, 2, 0))
            keep = torch.cat((attn_cache[i], attn_in.transpose(0, 1)), dim=0)
            next_attn.append(keep[keep.shape[0] - self.left_context:])
            next_cnn.append(conv.permute(2, 0, 1))
        if conformer.final_norm is not None:
            y = conformer.final_norm(y)
        return self.proj(y), torch.stack(next_attn), torch.stack(next_cnn)


def _block_step(block: Any, x: torch.Tensor, mask: torch.Tensor, attn_in: torch.Tensor,
                conv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`ConformerBlock.streaming_step` (eval, no adapters) with the attention cache
    given as the block's normalised attention input on the cached frames.

    Args:
        x: (N, t, C) the chunk. mask: bool (N, 1, 1, Tc + t). attn_in: (N, Tc, C).
        conv_cache: (N, C, kernel - 1).

    Returns:
        (N, t, C) output, (N, t, C) the chunk's attention input, the next conv cache.
    """
    attn = block.attn
    x = x + 0.5 * block.ffn1(block.ffn1_norm(x))
    a = block.attn_norm(x)
    keys = attn._heads(attn.k_proj(attn_in))
    values = attn._heads(attn.v_proj(attn_in))
    h, _ = attn(a, mask, cache=(keys, values))
    x = x + h
    h, conv_cache = block.conv(block.conv_norm(x), None, conv_cache)
    x = x + h
    x = x + 0.5 * block.ffn2(block.ffn2_norm(x))
    return block.final_norm(x), a, conv_cache


class TransducerDecoder(nn.Module):
    """Stateless predictor + the joiner's ``decoder_proj``: (N, context_size) int64 token
    ids -> (N, J). Negative ids (some runtimes' "before the start") read as the blank,
    as the model's own search pads its context."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.predictor = model.predictor
        self.decoder_proj = model.joiner.decoder_proj
        self.blank_id = int(model.blank_id)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.where(y < 0, torch.full_like(y, self.blank_id), y)
        return self.decoder_proj(self.predictor(y, need_pad=False)[:, 0])


class TransducerJoiner(nn.Module):
    """The joiner on projected inputs: (N, J) encoder, (N, J) decoder -> (N, V) logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.output_linear = model.joiner.output_linear

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.output_linear(F.tanh(encoder_out + decoder_out))
