"""Conformer block (Gulati et al., 2020) with macaron FFNs, pre-norm and adapter points.

Block: ``x + 1/2 FFN -> + MHSA -> + Conv -> + 1/2 FFN -> LayerNorm``, each sub-module fed
through its own LayerNorm (pre-norm).  Padding never influences valid frames: attention
masks padded keys, and the convolution module zeroes padded frames before its depthwise
convolution.  A causal convolution (left padding only) plus chunked attention makes the
block streamable; :meth:`ConformerBlock.streaming_step` processes one chunk with caches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.nn.adapters import CONFORMER_POINTS, AdapterContext, AdapterSlots
from speechfm.nn.attention import KVCache, MultiHeadSelfAttention

__all__ = ["ConformerBlock", "ConvModule", "FeedForward"]


class FeedForward(nn.Module):
    """Linear -> Swish -> dropout -> Linear.

    Args:
        dim: C.
        hidden_dim: inner size (typically 4 C).
        dropout: dropout after the activation.

    Shapes: (N, T, C) -> (N, T, C).
    """

    def __init__(
        self, dim: int, hidden_dim: int, *, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.linear2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.linear1(x))
        return self.linear2(self.dropout(h) if self.training else h)  # eval: skip the call


class ConvModule(nn.Module):
    """Conformer convolution module (without its pre-norm, which the block owns).

    Pointwise (C -> 2C) + GLU, zero the padded frames, depthwise conv (odd ``kernel``;
    ``causal`` pads ``kernel - 1`` frames on the left only), norm, Swish, pointwise (C -> C).

    Args:
        dim: C.
        kernel: depthwise kernel size (odd).
        causal: left padding only (needed for exact streaming).
        norm: ``"layer_norm"`` (default; per frame, so exact under padding and streaming) or
            ``"batch_norm"`` (its training statistics include padded frames).
        bias: bias on the three convolutions (w2v-BERT 2.0 has none).
        eps: norm epsilon.

    Shapes: (N, T, C) -> (N, T, C).
    """

    def __init__(
        self,
        dim: int,
        kernel: int,
        *,
        causal: bool = False,
        norm: str = "layer_norm",
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"depthwise kernel must be odd, got {kernel}")
        self.kernel = kernel
        self.causal = causal
        self.pointwise1 = nn.Linear(dim, 2 * dim, bias=bias)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim, bias=bias)
        if norm == "layer_norm":
            self.norm: nn.Module = nn.LayerNorm(dim, eps=eps)
        elif norm == "batch_norm":
            self.norm = nn.BatchNorm1d(dim, eps=eps)
        else:
            raise ValueError(f"conv norm must be 'layer_norm' or 'batch_norm', got {norm!r}")
        self.pointwise2 = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convolve.

        Args:
            x: (N, T, C), already normalised.
            valid: (N, T) bool, True on real frames; None if there is no padding.
            cache: (N, C, kernel - 1), the GLU outputs of the frames just before ``x``
                (streaming; causal only). Zeros at the start of a stream.

        Returns:
            y: (N, T, C).
            new cache: (N, C, kernel - 1) if ``cache`` was given, else None.
        """
        h = F.glu(self.pointwise1(x), dim=-1)
        if valid is not None:
            # Padded frames must read as zeros, exactly as beyond the end of a lone sequence.
            h = h.masked_fill(~valid.unsqueeze(-1), 0.0)
        h = h.transpose(1, 2)  # (N, C, T)
        new_cache = None
        if cache is not None:
            h = torch.cat((cache.to(h.dtype), h), dim=2)
            new_cache = h[:, :, h.shape[2] - (self.kernel - 1) :]
        elif self.causal:
            h = F.pad(h, (self.kernel - 1, 0))
        else:
            h = F.pad(h, ((self.kernel - 1) // 2, (self.kernel - 1) // 2))
        h = self.depthwise(h)
        if isinstance(self.norm, nn.LayerNorm):
            h = self.norm(h.transpose(1, 2))
        else:
            h = self.norm(h).transpose(1, 2)
        return self.pointwise2(F.silu(h)), new_cache


class ConformerBlock(nn.Module):
    """One Conformer block.

    Args:
        dim: C.
        num_heads: attention heads.
        ffn_dim: inner size of both FFNs.
        conv_kernel: depthwise kernel size (odd).
        pos_type: attention positional scheme (see :mod:`speechfm.nn.attention`).
        dropout: dropout on every sub-module output and inside the FFNs.
        attn_dropout: dropout on attention weights.
        conv_causal: causal depthwise convolution.
        conv_norm: ``"layer_norm"`` or ``"batch_norm"``.
        conv_bias: biases in the convolution module.
        rel_left_max, rel_right_max: ``relative_key`` clipping distances.
        rotary_base: ``rotary`` frequency base.
        layer_drop: stochastic depth rate: in training each *sample* skips the whole block
            with this probability (the kept residual branches are scaled by 1/(1-p)).
        eps: LayerNorm epsilon.

    Adapter points (see :mod:`speechfm.nn.adapters`): ``after_ffn1``, ``after_attn``,
    ``after_conv``, ``after_ffn2``, ``after_block``, ``parallel``, ``prompt``, ``prefix``
    and ``attn_q``/``attn_k``/``attn_v``/``attn_out``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        conv_kernel: int,
        *,
        pos_type: str = "rel_pos",
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        conv_causal: bool = False,
        conv_norm: str = "layer_norm",
        conv_bias: bool = True,
        rel_left_max: int = 64,
        rel_right_max: int = 8,
        rotary_base: float = 10000.0,
        layer_drop: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not 0.0 <= layer_drop < 1.0:
            raise ValueError(f"layer_drop must be in [0, 1), got {layer_drop}")
        self.ffn1_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn1 = FeedForward(dim, ffn_dim, dropout=dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadSelfAttention(
            dim,
            num_heads,
            pos_type=pos_type,
            dropout=attn_dropout,
            rel_left_max=rel_left_max,
            rel_right_max=rel_right_max,
            rotary_base=rotary_base,
        )
        self.conv_norm = nn.LayerNorm(dim, eps=eps)
        self.conv = ConvModule(
            dim, conv_kernel, causal=conv_causal, norm=conv_norm, bias=conv_bias, eps=eps
        )
        self.ffn2_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn2 = FeedForward(dim, ffn_dim, dropout=dropout)
        self.final_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.layer_drop = layer_drop
        self.adapters = AdapterSlots(CONFORMER_POINTS)

    def _body(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        valid: torch.Tensor | None,
        ctx: AdapterContext | None,
        attn_cache: KVCache | None,
        conv_cache: torch.Tensor | None,
        pos_offset: int,
        scale: float,
        pos_memo: dict | None = None,
    ) -> tuple[torch.Tensor, KVCache, torch.Tensor | None]:
        slots = self.adapters
        # Dropout is the identity in eval: skip its module calls there (streaming runs
        # this once per chunk, where per-call overheads count).
        drop = self.dropout if self.training else _identity
        x_in = x
        h = slots.residual("after_ffn1", self.ffn1(self.ffn1_norm(x)), ctx)
        x = torch.add(x, drop(h), alpha=0.5 * scale)
        h, kv = self.attn(
            self.attn_norm(x),
            attn_mask,
            cache=attn_cache,
            pos_offset=pos_offset,
            adapters=slots,
            ctx=ctx,
            pos_memo=pos_memo,
        )
        x = torch.add(x, drop(slots.residual("after_attn", h, ctx)), alpha=scale)
        h, conv_cache = self.conv(self.conv_norm(x), valid, conv_cache)
        x = torch.add(x, drop(slots.residual("after_conv", h, ctx)), alpha=scale)
        h = slots.residual("after_ffn2", self.ffn2(self.ffn2_norm(x)), ctx)
        x = torch.add(x, drop(h), alpha=0.5 * scale)
        x = self.final_norm(x)
        x = slots.add_from_input("parallel", x_in, x, ctx)
        x = slots.residual("after_block", x, ctx)
        return x, kv, conv_cache

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        ctx: AdapterContext | None = None,
    ) -> torch.Tensor:
        """Full-sequence forward.

        Args:
            x: (N, T, C).
            attn_mask: bool broadcastable to (N, 1, T, T), True = may attend (padding and
                chunking combined, see :func:`speechfm.nn.masks.attention_mask`); None = all.
            valid: (N, T) bool, True on real frames; None if there is no padding.
            ctx: active adapters.

        Returns:
            (N, T, C).
        """
        prefix = self.adapters.prefix(ctx)
        num_prompts = 0
        if prefix is not None:
            x, attn_mask, valid, num_prompts = _prepend(x, prefix, attn_mask, valid)
        keep = None
        scale = 1.0
        if self.training and self.layer_drop > 0.0:
            keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.layer_drop
            if not bool(keep.any()):
                return x[:, num_prompts:]
            scale = 1.0 / (1.0 - self.layer_drop)
        out, _, _ = self._body(x, attn_mask, valid, ctx, None, None, 0, scale)
        if keep is not None:
            out = torch.where(keep, out, x)
        return out[:, num_prompts:]

    def streaming_step(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        valid: torch.Tensor | None,
        attn_cache: KVCache,
        conv_cache: torch.Tensor,
        pos_offset: int,
        ctx: AdapterContext | None = None,
        *,
        pos_memo: dict | None = None,
    ) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """Process one chunk given the caches of everything before it (eval mode).

        Args:
            x: (N, t, C) the chunk.
            attn_mask: bool (N, 1, 1 or t, Tc + t) over cached keys then chunk keys.
            valid: (N, t) bool or None.
            attn_cache: (keys, values), each (N, H, Tc, d).
            conv_cache: (N, C, kernel - 1).
            pos_offset: absolute frame index of ``x[:, 0]``.
            pos_memo: a memo of the attention's positional tables (see
                :meth:`MultiHeadSelfAttention.position_bias`), or None.

        Returns:
            y: (N, t, C).
            (keys, values): (N, H, Tc + t, d), the caller trims them to its left context.
            new conv cache: (N, C, kernel - 1).
        """
        if self.adapters.prefix(ctx) is not None:
            raise ValueError("prompt adapters cannot be used in streaming; disable them via ctx")
        if not self.conv.causal:
            raise ValueError("streaming needs a causal convolution module (conv_causal=True)")
        y, kv, conv_cache = self._body(
            x, attn_mask, valid, ctx, attn_cache, conv_cache, pos_offset, 1.0, pos_memo
        )
        return y, kv, conv_cache


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _prepend(
    x: torch.Tensor,
    prefix: torch.Tensor,
    attn_mask: torch.Tensor | None,
    valid: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]:
    """Prepend prompt frames (P, C) to x (N, T, C); prompts are valid and visible to all."""
    n = x.shape[0]
    p = prefix.shape[0]
    x = torch.cat((prefix.to(x.dtype).unsqueeze(0).expand(n, -1, -1), x), dim=1)
    if valid is not None:
        valid = F.pad(valid, (p, 0), value=True)
    if attn_mask is not None:
        attn_mask = F.pad(attn_mask, (p, 0), value=True)
        if attn_mask.shape[-2] > 1:
            attn_mask = F.pad(attn_mask, (0, 0, p, 0), value=True)
    return x, attn_mask, valid, p
