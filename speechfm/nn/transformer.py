"""Plain pre-norm transformer block (ViT / AST), the variant beside the Conformer block.

Block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP; no macaron FFN, no
convolution, no norm at the end of the block (the encoder owns a final LayerNorm), and
absolute positions added to the input by the encoder.  Parameter layout and numerics are
those of transformers' ``ASTLayer`` / ``ViTLayer``, so AST checkpoints map exactly.

Adapter points (see :mod:`speechfm.nn.adapters`): ``after_attn`` and ``after_ffn``
(sequential bottleneck or convolution adapters: Houlsby placement uses both, Pfeiffer
``after_ffn`` only), ``parallel_attn`` and ``parallel_ffn`` (parallel adapters reading the
residual stream), ``attn_q``/``attn_k``/``attn_v``/``attn_out`` (LoRA), ``prompt`` (deep
prompt tuning), ``prefix`` (prefix tuning) and ``after_block``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.nn.adapters import TRANSFORMER_POINTS, AdapterContext, AdapterSlots
from speechfm.nn.attention import MultiHeadSelfAttention

__all__ = ["MLP", "TransformerBlock"]


class MLP(nn.Module):
    """Linear -> GELU -> dropout -> Linear (-> dropout at the block's residual).

    Shapes: (N, T, C) -> (N, T, C).
    """

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class TransformerBlock(nn.Module):
    """One pre-norm transformer block.

    Args:
        dim: C.
        num_heads: attention heads.
        mlp_dim: inner size of the MLP.
        dropout: dropout inside the MLP and on both sub-module outputs.
        attn_dropout: dropout on attention weights.
        eps: LayerNorm epsilon (AST: 1e-12).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadSelfAttention(dim, num_heads, pos_type="none", dropout=attn_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = MLP(dim, mlp_dim, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.adapters = AdapterSlots(TRANSFORMER_POINTS)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        ctx: AdapterContext | None = None,
    ) -> torch.Tensor:
        """(N, T, C) -> (N, T, C).

        Args:
            x: the token sequence.
            attn_mask: bool broadcastable to (N, 1, T, T), True = may attend; None = all.
            ctx: active adapters.
        """
        slots = self.adapters
        prefix = slots.prefix(ctx)
        p = 0
        if prefix is not None:
            p = prefix.shape[0]
            x = torch.cat((prefix.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1), x), 1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (p, 0), value=True)
                if attn_mask.shape[-2] > 1:
                    attn_mask = F.pad(attn_mask, (0, 0, p, 0), value=True)
        h, _ = self.attn(self.attn_norm(x), attn_mask, adapters=slots, ctx=ctx)
        h = slots.residual("after_attn", h, ctx)
        h = slots.add_from_input("parallel_attn", x, h, ctx)
        x = x + self.dropout(h)
        h = self.ffn(self.ffn_norm(x))
        h = slots.residual("after_ffn", h, ctx)
        h = slots.add_from_input("parallel_ffn", x, h, ctx)
        x = x + self.dropout(h)
        x = slots.residual("after_block", x, ctx)
        return x[:, p:]
