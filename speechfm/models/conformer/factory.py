"""ConformerConfig -> ConformerEncoder."""

from __future__ import annotations

import torch
from torch import nn

from speechfm.models.conformer.config import ConformerConfig
from speechfm.models.conformer.model import ConformerEncoder
from speechfm.nn.conformer import ConformerBlock
from speechfm.nn.length_adapter import LengthAdapter
from speechfm.nn.subsampling import (
    Conv2dSubsampling,
    FrameStacking,
    PatchEmbedding,
    VGGSubsampling,
)

__all__ = ["create_conformer_encoder", "create_front_end", "create_length_adapter"]


class _PatchFrontEnd(PatchEmbedding):
    """:class:`PatchEmbedding` with the encoder's front-end interface.

    The encoder calls its front end as ``(x (N, T, F), x_lens) -> (y (N, T', C), y_lens)``;
    PatchEmbedding also returns the patch grid, which the encoder has no use for.  Its
    patches are flattened time-major, so the valid ones form a prefix of
    ``output_lengths(x_lens)`` tokens and the usual padding mask applies unchanged.
    Subclassing (not wrapping) keeps the parameter names ``front_end.proj.*``.

    With a single patch across frequency (``patch[1]`` covering the input) every output is
    one time step over a fixed window of input frames, as for
    :class:`~speechfm.nn.subsampling.Conv2dSubsampling`, so it streams exactly; with several
    frequency patches per step it does not.
    """

    def __init__(
        self, in_dim: int, dim: int, *, patch: tuple[int, int], stride: tuple[int, int]
    ) -> None:
        super().__init__(in_dim, dim, patch=patch, stride=stride)
        self.factor = self.stride[0]
        self.time_stride = self.stride[0]
        self.receptive_field = self.patch[0]
        self.streamable = self.num_freq_patches == 1

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, x_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, y_lens, _ = super().forward(x, x_lens)
        return y, y_lens


def create_front_end(config: ConformerConfig) -> nn.Module:
    """The front end named by ``config.front_end``, projecting to ``config.dim``."""
    if config.front_end == "conv2d":
        return Conv2dSubsampling(
            config.input_dim,
            config.dim,
            factor=config.subsampling_factor,
            channels=config.front_end_channels,
        )
    if config.front_end == "vgg":
        half = max(config.front_end_channels // 2, 1)
        return VGGSubsampling(
            config.input_dim, config.dim, channels=(half, config.front_end_channels)
        )
    if config.front_end == "patch":
        return _PatchFrontEnd(
            config.input_dim, config.dim, patch=config.patch_size, stride=config.patch_stride
        )
    return FrameStacking(
        config.input_dim,
        stride=config.subsampling_factor,
        out_dim=config.dim,
        mode=config.stack_mode,
        eps=config.layer_norm_eps,
    )


def create_length_adapter(config: ConformerConfig) -> LengthAdapter | None:
    """The length adapter ``config.length_adapter`` describes, or None."""
    la = config.length_adapter
    if la is None:
        return None
    return LengthAdapter(
        config.dim,
        out_dim=la.out_dim(config.dim),
        num_layers=la.num_layers,
        num_heads=config.num_heads,
        ffn_dim=config.ffn_dim,
        kernel_size=la.kernel_size,
        stride=la.stride,
        activation=la.activation,
        intermediate_ffn=la.intermediate_ffn,
        dropout=config.dropout,
        attn_dropout=config.attn_dropout,
        eps=config.layer_norm_eps,
    )


def create_conformer_encoder(config: ConformerConfig) -> ConformerEncoder:
    """Validate ``config`` and build the encoder it describes."""
    config.validate()
    blocks = [
        ConformerBlock(
            config.dim,
            config.num_heads,
            config.ffn_dim,
            config.conv_kernel,
            pos_type=config.pos_type,
            dropout=config.dropout,
            attn_dropout=config.attn_dropout,
            conv_causal=config.conv_causal,
            conv_norm=config.conv_norm,
            conv_bias=config.conv_bias,
            rel_left_max=config.rel_left_max,
            rel_right_max=config.rel_right_max,
            rotary_base=config.rotary_base,
            layer_drop=config.layer_drop,
            eps=config.layer_norm_eps,
        )
        for _ in range(config.num_layers)
    ]
    return ConformerEncoder(
        create_front_end(config),
        blocks,
        dim=config.dim,
        abs_positions=config.pos_type == "abs",
        input_dropout=config.dropout,
        final_norm=config.final_norm,
        eps=config.layer_norm_eps,
        chunk_size=config.chunk_size,
        left_context=config.left_context,
        dynamic_chunk=config.dynamic_chunk,
        dynamic_chunk_max=config.dynamic_chunk_max,
        dynamic_full_prob=config.dynamic_full_prob,
        dynamic_left_context=config.dynamic_left_context,
        gradient_checkpointing=config.gradient_checkpointing,
        length_adapter=create_length_adapter(config),
    )
