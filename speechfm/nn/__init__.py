"""Reusable layers: masks, positional encodings, attention, front ends, Conformer block,
adapters and streaming state.  Imports torch only."""

from speechfm.nn.adapters import (
    AdapterContext,
    AdapterSlots,
    BottleneckAdapter,
    LoRA,
    LoRALinear,
    PromptTuning,
    count_parameters,
    freeze_all_but_adapters,
)
from speechfm.nn.attention import POS_TYPES, MultiHeadSelfAttention
from speechfm.nn.conformer import ConformerBlock, ConvModule, FeedForward
from speechfm.nn.masks import (
    attention_mask,
    chunk_attention_mask,
    lengths_to_valid_mask,
    make_pad_mask,
    sample_dynamic_chunk,
)
from speechfm.nn.streaming import StreamingState
from speechfm.nn.subsampling import (
    Conv2dSubsampling,
    FrameStacking,
    PatchEmbedding,
    VGGSubsampling,
)

__all__ = [
    "POS_TYPES",
    "AdapterContext",
    "AdapterSlots",
    "BottleneckAdapter",
    "ConformerBlock",
    "Conv2dSubsampling",
    "ConvModule",
    "FeedForward",
    "FrameStacking",
    "LoRA",
    "LoRALinear",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PromptTuning",
    "StreamingState",
    "VGGSubsampling",
    "attention_mask",
    "chunk_attention_mask",
    "count_parameters",
    "freeze_all_but_adapters",
    "lengths_to_valid_mask",
    "make_pad_mask",
    "sample_dynamic_chunk",
]
