"""Length adapter: strided convolution + attention layers that shorten an encoder's output.

The adapter of w2v-BERT 2.0 / SeamlessM4T speech encoders (transformers'
``Wav2Vec2BertAdapter``), which bridges a speech encoder to a text decoder or a CTC head at
a lower frame rate.  :class:`LengthAdapter` runs, in order:

1. optionally an intermediate FFN as a half-step residual, ``x + 0.5 * FFN_relu(x)``
   (HF's ``use_intermediate_ffn_before_adapter``);
2. optionally a down- (or up-) projection ``LayerNorm(Linear(x))`` to ``out_dim`` (HF's
   ``output_hidden_size != hidden_size``);
3. ``num_layers`` :class:`LengthAdapterLayer` s, each dividing the frame rate by
   ``stride``::

       residual = GLU(Conv1d_stride(LayerNorm(x)))
       h = GLU(Conv1d_stride(LayerNorm(x)))
       h = dropout(MHSA(h, key padding mask)) + residual
       out = h + FFN_act(LayerNorm(h))

   Both convolutions map C -> 2C channels with kernel ``kernel_size``, stride ``stride``
   and ``stride // 2`` zero frames on each side (HF's padding); the attention has no
   positional terms.

Lengths are HF's (``Wav2Vec2BertModel._get_feat_extract_output_lengths``), which pad by
``kernel_size // 2`` instead of the convolutions' ``stride // 2``: per layer
``L' = floor((L + 2 * (kernel_size // 2) - kernel_size) / stride) + 1``
(:meth:`LengthAdapter.output_lengths`).  For the usual settings (kernel 3 / stride 2,
kernel 8 / stride 8) the two paddings agree, and the valid outputs are exactly the frames
the convolution computes for the utterance alone.

Padding.  Before each strided convolution the frames past an utterance's end are zeroed, so
that a frame's output never depends on how much padding its batch had: the convolution
window of the last valid frames reads zeros there, exactly as it reads the convolution's
own zero padding when the utterance is alone.  HF does not zero them: in a padded HF batch
the last valid frames' windows read whatever the encoder left in the padded frames, and
through the adapter's attention that reaches every frame of the utterance, so HF's output
for an utterance changes with the batch it is in.  To compare with HF, run HF per
utterance (or on batches of equal lengths); this module then computes HF's function on
every frame HF computes.

When the two paddings differ, HF contradicts itself and this module follows HF's
*unpadded* computation: an utterance of ``n`` frames gives
``floor((n + 2 * (stride // 2) - kernel_size) / stride) + 1`` convolution frames, which
are what the next layer's convolution reads (frames past them are zeroed), and attention
keys stop at the smaller of that count and HF's length, as in HF with an all-ones
``attention_mask``.  Where HF's length exceeds the frames HF computes for the utterance
alone, the extra valid frames are computed here as if the utterance were followed by
zeros (HF computes them only in a padded batch, from the padding).

Dropout (training only): ``dropout`` after the attention and inside and after the FFNs,
``attn_dropout`` on the attention weights.  Unlike HF, whose ``layerdrop`` also skips whole
adapter layers (changing the output length without changing its computed lengths), no
adapter layer is ever dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.nn.attention import MultiHeadSelfAttention
from speechfm.nn.masks import attention_mask, lengths_to_valid_mask

__all__ = ["ACTIVATIONS", "ActivationFeedForward", "LengthAdapter", "LengthAdapterLayer"]

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
}
"""Activations of the adapter FFNs, by name."""


class ActivationFeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout (HF's ``Wav2Vec2BertFeedForward``).

    Args:
        dim: C.
        hidden_dim: inner size.
        activation: a name in :data:`ACTIVATIONS`.
        dropout: after the activation and after the output projection.

    Shapes: (N, T, C) -> (N, T, C).
    """

    def __init__(
        self, dim: int, hidden_dim: int, *, activation: str = "relu", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        self.activation = activation
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(ACTIVATIONS[self.activation](self.linear1(x)))
        return self.dropout(self.linear2(h))


def conv_frames(lens: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """Frames a Conv1d(kernel_size, stride, padding on both sides) computes from ``lens``
    input frames (never negative)."""
    out = torch.div(lens + 2 * padding - kernel_size, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)


class LengthAdapterLayer(nn.Module):
    """One adapter layer (HF's ``Wav2Vec2BertAdapterLayer``): frame rate divided by ``stride``.

    Args:
        dim: C (input and output width).
        num_heads: attention heads (C divisible by it).
        ffn_dim: inner size of the FFN.
        kernel_size: kernel of both strided convolutions.
        stride: their stride.
        activation: the FFN's activation (:data:`ACTIVATIONS`).
        dropout: after the attention and inside/after the FFN.
        attn_dropout: on attention weights.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        kernel_size: int = 3,
        stride: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = stride // 2  # HF's convolution padding (not kernel_size // 2)
        self.residual_norm = nn.LayerNorm(dim, eps=eps)
        self.residual_conv = nn.Conv1d(dim, 2 * dim, kernel_size, stride=stride)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.attn_conv = nn.Conv1d(dim, 2 * dim, kernel_size, stride=stride)
        self.attn = MultiHeadSelfAttention(dim, num_heads, pos_type="none", dropout=attn_dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = ActivationFeedForward(dim, ffn_dim, activation=activation, dropout=dropout)

    def output_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames the convolutions compute from ``frames`` input frames (HF's conv arithmetic)."""
        return conv_frames(frames, self.kernel_size, self.stride, self.padding)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """HF's valid output frames (``_get_feat_extract_output_lengths``, one layer)."""
        return conv_frames(lens, self.kernel_size, self.stride, self.kernel_size // 2)

    def _conv(
        self,
        norm: nn.LayerNorm,
        conv: nn.Conv1d,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        num_out: int,
    ) -> torch.Tensor:
        h = norm(x)
        if valid is not None:
            # Padded frames read as zeros, exactly as beyond the end of a lone utterance.
            h = h.masked_fill(~valid.unsqueeze(-1), 0.0)
        t = h.shape[1]
        # Right zero frames beyond HF's `stride // 2` so that at least num_out frames come out.
        extra = max(0, (num_out - 1) * self.stride + self.kernel_size - t - 2 * self.padding)
        h = F.pad(h.transpose(1, 2), (self.padding, self.padding + extra))
        return F.glu(conv(h), dim=1).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        key_valid: torch.Tensor | None,
        num_out: int,
    ) -> torch.Tensor:
        """Shorten.

        Args:
            x: (N, T, C).
            valid: (N, T) bool, the input frames the convolutions may read (the others
                are zeroed first); None = all.
            key_valid: (N, T') bool, the output frames attention may attend to; None = all.
            num_out: T', at least the frames HF's convolution arithmetic gives for T (more
                are computed over extra zero frames).

        Returns:
            (N, T', C).
        """
        residual = self._conv(self.residual_norm, self.residual_conv, x, valid, num_out)
        h = self._conv(self.attn_norm, self.attn_conv, x, valid, num_out)
        h, _ = self.attn(h, attention_mask(key_valid, None))
        h = self.attn_dropout(h) + residual
        return h + self.ffn(self.ffn_norm(h))


class LengthAdapter(nn.Module):
    """Intermediate FFN, projection and :class:`LengthAdapterLayer` s (see the module doc).

    Args:
        in_dim: width of the input (the encoder's).
        out_dim: width of the output; a ``Linear`` + ``LayerNorm`` projection when it differs
            from ``in_dim``.  None = ``in_dim``.
        num_layers: adapter layers (0: only the FFN / projection, lengths unchanged).
        num_heads: attention heads of the layers (``out_dim`` divisible by it).
        ffn_dim: inner size of every FFN (intermediate and per layer).
        kernel_size, stride: of the layers' convolutions.
        activation: the layers' FFN activation (:data:`ACTIVATIONS`); the intermediate FFN
            uses ReLU, as HF.
        intermediate_ffn: apply ``x + 0.5 * FFN(x)`` first.
        dropout, attn_dropout, eps: as :class:`LengthAdapterLayer`.

    Parameter names: ``intermediate_ffn.linear{1,2}``, ``proj``, ``proj_norm``,
    ``layers.i.{residual_norm, residual_conv, attn_norm, attn_conv, attn.{q,k,v,out}_proj,
    ffn_norm, ffn.linear{1,2}}``.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        out_dim: int | None = None,
        num_layers: int = 1,
        num_heads: int,
        ffn_dim: int,
        kernel_size: int = 3,
        stride: int = 2,
        activation: str = "relu",
        intermediate_ffn: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.kernel_size = kernel_size
        self.stride = stride
        self.intermediate_ffn = (
            ActivationFeedForward(in_dim, ffn_dim, activation="relu", dropout=dropout)
            if intermediate_ffn
            else None
        )
        if out_dim != in_dim:
            self.proj: nn.Linear | None = nn.Linear(in_dim, out_dim)
            self.proj_norm: nn.LayerNorm | None = nn.LayerNorm(out_dim, eps=eps)
        else:
            self.proj = self.proj_norm = None
        self.layers = nn.ModuleList(
            LengthAdapterLayer(
                out_dim,
                num_heads,
                ffn_dim,
                kernel_size=kernel_size,
                stride=stride,
                activation=activation,
                dropout=dropout,
                attn_dropout=attn_dropout,
                eps=eps,
            )
            for _ in range(num_layers)
        )

    @property
    def factor(self) -> int:
        """Nominal frame-rate reduction, ``stride ** num_layers``."""
        return self.stride ** len(self.layers)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """(N,) int64 valid output frames for ``lens`` input frames, as HF computes them."""
        lens = lens.to(torch.int64)
        for layer in self.layers:
            lens = layer.output_lengths(lens)
        return lens

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, in_dim), (N,) -> (N, T', out_dim) zero past ``out_lens``, out_lens (N,) int64.

        T' is what HF's convolutions give for T frames, or more where a valid frame needs
        it (see the module doc); ``out_lens == output_lengths(x_lens)``.
        """
        x_lens = x_lens.to(torch.int64)
        if self.intermediate_ffn is not None:
            x = x + 0.5 * self.intermediate_ffn(x)
        if self.proj is not None and self.proj_norm is not None:
            x = self.proj_norm(self.proj(x))
        frames = lens = x_lens  # frames the convolutions computed / HF's valid lengths
        for layer in self.layers:
            t = x.shape[1]
            valid = lengths_to_valid_mask(frames, t) if bool((frames < t).any()) else None
            frames = layer.output_frames(frames)
            lens = layer.output_lengths(lens)
            natural = (t + 2 * layer.padding - layer.kernel_size) // layer.stride + 1
            num_out = max(natural, int(lens.max()) if lens.numel() else 0, 1)
            keys = torch.minimum(frames, lens)
            key_valid = lengths_to_valid_mask(keys, num_out) if bool((keys < num_out).any()) else None
            x = layer(x, valid, key_valid, num_out)
        if bool((lens < x.shape[1]).any()):
            x = x.masked_fill(~lengths_to_valid_mask(lens, x.shape[1]).unsqueeze(-1), 0.0)
        return x, lens
