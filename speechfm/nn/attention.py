"""Multi-head self-attention with several positional schemes, on top of SDPA.

Every scheme ends in one call to :func:`torch.nn.functional.scaled_dot_product_attention`:

- ``none`` / ``abs``: plain attention (absolute positions, if any, are added to the input
  by the encoder); a boolean mask or none, so flash / memory-efficient kernels apply.
- ``rotary``: queries and keys rotated by position (RoFormer), then plain attention.
- ``rel_pos``: Transformer-XL / ESPnet relative positions.  The score is
  ``((q + u) k^T + rel_shift((q + v) p^T)) / sqrt(d)`` with ``p`` a projected sinusoid of
  the signed distance; the position term is precomputed and handed to SDPA as an additive
  float mask, SDPA adds the content term.
- ``relative_key``: Shaw et al. clipped distance embeddings as in HF Wav2Vec2-BERT /
  w2v-BERT 2.0: ``(q k^T + q E[clip(j - i)]^T) / sqrt(d)``, with ``E`` a table of
  ``left_max + right_max + 1`` rows of size d shared by all heads.  Computed as ``q E^T``
  (N, H, Tq, P) followed by a gather, instead of materialising (Tq, Tk, d) embeddings.

The module supports a key/value cache for streaming: cached keys precede the current
frames, and positional terms use the right distances to them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.nn.adapters import AdapterContext, AdapterSlots
from speechfm.nn.positional import (
    apply_rotary,
    clipped_distance_index,
    rel_shift,
    relative_positions,
    rotary_cos_sin,
    sinusoidal_embedding,
)

__all__ = ["POS_TYPES", "MultiHeadSelfAttention"]

POS_TYPES = ("rel_pos", "relative_key", "rotary", "abs", "none")

KVCache = tuple[torch.Tensor, torch.Tensor]


def _table_dtype(x: torch.Tensor) -> torch.dtype:
    """Positional tables in float64 for float64 models (exactness tests), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: model width C.
        num_heads: H (C must be divisible by H).
        pos_type: one of :data:`POS_TYPES`.
        dropout: dropout on attention weights (training only).
        bias: bias on the q/k/v/out projections.
        rel_left_max: ``relative_key``: largest distinct distance into the past.
        rel_right_max: ``relative_key``: largest distinct distance into the future.
        rotary_base: ``rotary``: frequency base.

    The projections are plain ``nn.Linear`` layers named ``q_proj``, ``k_proj``, ``v_proj``
    and ``out_proj``; adapters reach them through the ``attn_*`` points of an
    :class:`AdapterSlots` passed to :meth:`forward`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        pos_type: str = "rel_pos",
        dropout: float = 0.0,
        bias: bool = True,
        rel_left_max: int = 64,
        rel_right_max: int = 8,
        rotary_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if pos_type not in POS_TYPES:
            raise ValueError(f"unknown pos_type {pos_type!r}; expected one of {POS_TYPES}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.pos_type = pos_type
        self.dropout = dropout
        self.rel_left_max = rel_left_max
        self.rel_right_max = rel_right_max
        self.rotary_base = rotary_base
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        if pos_type == "rel_pos":
            self.linear_pos = nn.Linear(dim, dim, bias=False)
            self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
            self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)
        elif pos_type == "relative_key":
            self.distance_embedding = nn.Embedding(rel_left_max + rel_right_max + 1, self.head_dim)
        elif pos_type == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got {self.head_dim}")

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        return x.view(n, t, self.num_heads, self.head_dim).transpose(1, 2)

    def position_bias(
        self,
        q: torch.Tensor,
        k_len: int,
        attn_mask: torch.Tensor | None = None,
        *,
        memo: dict | None = None,
    ) -> torch.Tensor | None:
        """Additive positional scores (N, H, Tq, Tk), already scaled by 1/sqrt(d), or None.

        ``q`` is (N, H, Tq, d), the queries before any ``pos_bias_u`` is added; they are the
        last Tq of the Tk keys.  Keys that ``attn_mask`` (bool, broadcastable to
        (N, H, Tq, Tk), True = may attend) hides get ``-inf``, so the result is the whole
        float mask SDPA needs.

        The scale is applied to the small positional table, not to the (N, H, Tq, Tk)
        result, and for ``relative_key`` the mask rides in the gather (hidden keys index an
        extra ``-inf`` column), so the (N, H, Tq, Tk) tensor is written exactly once.

        ``memo``: a dict in which the part that depends only on (Tq, Tk) and the weights --
        the projected sinusoids of ``rel_pos``, the distance indices of ``relative_key`` --
        is kept for later calls with the same lengths (streaming: every whole chunk has the
        same); it holds a few lengths at a time.  For inference: it is ignored while
        autograd records, and must not outlive a change of the weights (streaming states
        hold one per layer, see
        :meth:`~speechfm.models.conformer.ConformerEncoder.init_streaming_state`).
        """
        n, h, q_len, d = q.shape
        scale = 1.0 / math.sqrt(d)
        if memo is not None and torch.is_grad_enabled():
            memo = None  # a remembered table would carry no gradient
        key = (q_len, k_len, q.dtype, q.device)
        hit = memo.get(key) if memo is not None else None
        if self.pos_type == "rel_pos":
            p = hit
            if p is None:
                pos = sinusoidal_embedding(
                    relative_positions(q_len, k_len, q.device), self.dim, dtype=_table_dtype(q)
                )
                p = self.linear_pos(pos.to(self.linear_pos.weight.dtype))
                p = p.view(-1, h, d).transpose(0, 1).to(q.dtype) * scale  # (H, P, d)
                _remember(memo, key, p)
            scores = torch.matmul(q + self.pos_bias_v.to(q.dtype).unsqueeze(1), p.transpose(1, 2))
            bias = rel_shift(scores, k_len)
            if attn_mask is not None:
                return bias.masked_fill(~attn_mask, float("-inf"))
            return bias
        if self.pos_type == "relative_key":
            idx = hit
            if idx is None:
                idx = clipped_distance_index(
                    q_len, k_len, self.rel_left_max, self.rel_right_max, q.device
                )
                _remember(memo, key, idx)
            table = self.distance_embedding.weight.to(q.dtype) * scale  # (P, d)
            scores = torch.matmul(q, table.t())  # (N, H, Tq, P)
            if attn_mask is not None:
                idx = idx.masked_fill(~attn_mask, table.shape[0])  # (N or 1, 1, Tq, Tk)
                scores = F.pad(scores, (0, 1), value=float("-inf"))
            else:
                idx = idx.view(1, 1, q_len, k_len)
            return torch.gather(scores, -1, idx.expand(n, h, q_len, k_len))
        return None

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        pos_offset: int = 0,
        adapters: AdapterSlots | None = None,
        ctx: AdapterContext | None = None,
        pos_memo: dict | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Attend.

        Args:
            x: (N, T, C) queries' input (already normalised).
            attn_mask: bool, broadcastable to (N, H, T, Tk), True = may attend; Tk is T
                plus the cache length.
            cache: (keys, values), each (N, H, Tc, d), computed earlier for the Tc frames
                just before ``x`` (rotary keys are stored rotated).
            pos_offset: absolute position of ``x[:, 0]`` (rotary only; relative schemes
                need only the cache length).
            adapters: slots offering ``attn_q``/``attn_k``/``attn_v``/``attn_out`` and
                ``prefix`` (learned key/value prefixes).
            ctx: which adapters are active.
            pos_memo: a memo of the positional table for :meth:`position_bias` (streaming
                keeps one per layer), or None.

        Returns:
            out: (N, T, C).
            (keys, values): each (N, H, Tc + T, d), the cache extended by this call.
        """
        n, t, _ = x.shape
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        if adapters is not None:
            q = adapters.add_from_input("attn_q", x, q, ctx)
            k = adapters.add_from_input("attn_k", x, k, ctx)
            v = adapters.add_from_input("attn_v", x, v, ctx)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.pos_type == "rotary":
            positions = torch.arange(pos_offset, pos_offset + t, device=x.device)
            cos, sin = rotary_cos_sin(positions, self.head_dim, self.rotary_base, _table_dtype(q))
            q = apply_rotary(q, cos, sin)
            k = apply_rotary(k, cos, sin)
        if cache is not None:
            k = torch.cat((cache[0].to(k.dtype), k), dim=2)
            v = torch.cat((cache[1].to(v.dtype), v), dim=2)
        k_len = k.shape[2]
        new_cache = (k, v)

        bias = self.position_bias(q, k_len, attn_mask, memo=pos_memo)
        if self.pos_type == "rel_pos":
            q = q + self.pos_bias_u.to(q.dtype).unsqueeze(1)
        prefix = adapters.kv_prefix(ctx) if adapters is not None else None
        if prefix is not None:
            # Prefix tuning: learned keys/values every query may attend to; they carry no
            # position (zero positional score) and never enter the streaming cache.
            p = prefix[0].shape[0]
            pk = prefix[0].to(k.dtype).view(1, p, self.num_heads, self.head_dim).transpose(1, 2)
            pv = prefix[1].to(v.dtype).view(1, p, self.num_heads, self.head_dim).transpose(1, 2)
            k = torch.cat((pk.expand(n, -1, -1, -1), k), dim=2)
            v = torch.cat((pv.expand(n, -1, -1, -1), v), dim=2)
            if bias is not None:
                bias = F.pad(bias, (p, 0), value=0.0)
            elif attn_mask is not None:
                attn_mask = F.pad(attn_mask, (p, 0), value=True)
        dropout = self.dropout if self.training else 0.0
        if bias is not None:
            out = _biased_attention(q, k, v, bias.to(q.dtype), dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(n, t, self.dim)
        y = self.out_proj(out)
        if adapters is not None:
            y = adapters.add_from_input("attn_out", out, y, ctx)
        return y, new_cache


_MEMO_SIZE = 16  # lengths a positional memo holds: a whole chunk's and the partial last ones


def _remember(memo: dict | None, key: tuple, value: torch.Tensor) -> None:
    """Add ``value`` to a positional memo (None: no memo), emptying a full one first."""
    if memo is not None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()  # (not LRU eviction: clear() is atomic for threads sharing it)
        memo[key] = value


def _biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for (N, H, T, d) inputs and a float bias.

    SDPA computes this everywhere, but on the CPU, once the bias needs a gradient, it falls
    back to its reference path (separate scale, add and a "safe" softmax that rescans the
    scores for fully masked rows).  There an explicit ``baddbmm`` (the bias add fused into
    the score GEMM), softmax and ``bmm`` do less memory traffic: no row is ever fully
    masked here (:func:`speechfm.nn.masks.attention_mask` guarantees it).  Elsewhere --
    inference, or CUDA with its fused kernels that take a bias gradient -- SDPA is used.
    """
    if q.device.type != "cpu" or not (torch.is_grad_enabled() and bias.requires_grad):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    n, h, tq, d = q.shape
    tk = k.shape[2]
    scores = torch.baddbmm(
        bias.expand(n, h, tq, tk).reshape(n * h, tq, tk),
        q.reshape(n * h, tq, d),
        k.reshape(n * h, tk, d).transpose(1, 2),
        alpha=1.0 / math.sqrt(d),
    )
    probs = torch.softmax(scores, dim=-1)
    if dropout > 0.0:
        probs = F.dropout(probs, dropout)
    return torch.bmm(probs, v.reshape(n * h, tk, d)).view(n, h, tq, d)
