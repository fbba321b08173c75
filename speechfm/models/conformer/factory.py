"""ConformerConfig -> ConformerEncoder."""

from __future__ import annotations

from torch import nn

from speechfm.models.conformer.config import ConformerConfig
from speechfm.models.conformer.model import ConformerEncoder
from speechfm.nn.conformer import ConformerBlock
from speechfm.nn.subsampling import Conv2dSubsampling, FrameStacking, VGGSubsampling

__all__ = ["create_conformer_encoder", "create_front_end"]


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
    return FrameStacking(
        config.input_dim,
        stride=config.subsampling_factor,
        out_dim=config.dim,
        mode=config.stack_mode,
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
    )
