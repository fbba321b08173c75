"""Configuration of the shared Conformer encoder, and its named sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "FRONT_ENDS",
    "LENGTH_ADAPTER_ACTIVATIONS",
    "ConformerConfig",
    "LengthAdapterConfig",
    "conformer_base",
    "conformer_large",
    "conformer_small",
    "conformer_tiny",
]

FRONT_ENDS = ("conv2d", "vgg", "stack", "patch")
_POS_TYPES = ("rel_pos", "relative_key", "rotary", "abs", "none")
LENGTH_ADAPTER_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "tanh")


@dataclass(kw_only=True)
class LengthAdapterConfig:
    """A length adapter after the Conformer blocks
    (:class:`~speechfm.nn.length_adapter.LengthAdapter`, transformers'
    ``Wav2Vec2BertAdapter``): it divides the frame rate by ``stride`` per layer and may
    change the output width.  It shares the encoder's ``num_heads`` (attention),
    ``ffn_dim`` (FFNs), ``dropout``, ``attn_dropout`` and ``layer_norm_eps``."""

    num_layers: int = 1
    """Adapter layers, each a strided convolution + attention + FFN (0: only the
    intermediate FFN / projection, frame rate unchanged)."""
    kernel_size: int = 3
    """Kernel of the layers' strided convolutions."""
    stride: int = 2
    """Stride of the layers' convolutions (frame-rate reduction per layer)."""
    output_dim: int | None = None
    """Output width; when set (and different from ``dim``) a Linear + LayerNorm projects the
    blocks' output to it first.  None = ``dim``."""
    activation: str = "relu"
    """Activation of the layers' FFNs: "relu", "gelu", "gelu_tanh", "silu" or "tanh"."""
    intermediate_ffn: bool = False
    """Apply ``x + 0.5 * FFN_relu(x)`` to the blocks' output before the adapter (HF's
    ``use_intermediate_ffn_before_adapter``)."""

    def validate(self, dim: int, num_heads: int) -> None:
        """Raise ValueError naming the first inconsistent field (``dim``/``num_heads``: the
        encoder's)."""
        for name in ("num_layers", "kernel_size", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"length_adapter.{name} must be an int, got {value!r}")
        if self.num_layers < 0:
            raise ValueError(f"length_adapter.num_layers must be >= 0, got {self.num_layers}")
        if self.kernel_size < 1:
            raise ValueError(f"length_adapter.kernel_size must be >= 1, got {self.kernel_size}")
        if self.stride < 1:
            raise ValueError(f"length_adapter.stride must be >= 1, got {self.stride}")
        if self.output_dim is not None and (
            isinstance(self.output_dim, bool)
            or not isinstance(self.output_dim, int)
            or self.output_dim <= 0
        ):
            raise ValueError(
                f"length_adapter.output_dim must be a positive int or None, got {self.output_dim!r}"
            )
        out = self.out_dim(dim)
        if out % num_heads:
            raise ValueError(
                f"length_adapter output width {out} (output_dim, else dim) is not divisible by "
                f"num_heads {num_heads}"
            )
        if self.activation not in LENGTH_ADAPTER_ACTIVATIONS:
            raise ValueError(
                f"length_adapter.activation must be one of {LENGTH_ADAPTER_ACTIVATIONS}, got "
                f"{self.activation!r}"
            )

    def out_dim(self, dim: int) -> int:
        """The output width for an encoder of width ``dim``."""
        return dim if self.output_dim is None else self.output_dim

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LengthAdapterConfig:
        """From :func:`dataclasses.asdict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LengthAdapterConfig fields: {unknown}")
        return cls(**data)


@dataclass(kw_only=True)
class ConformerConfig:
    """Everything needed to build a :class:`~speechfm.models.conformer.ConformerEncoder`."""

    input_dim: int = 80
    """Feature dimension F of the input (fbank bins)."""
    front_end: str = "conv2d"
    """Front end: "conv2d" (x4/x6/x8 conv subsampling), "vgg" (x4), "stack" (frame stacking)
    or "patch" (AST-style spectrogram patches, one token per patch, time-major)."""
    subsampling_factor: int = 4
    """Time reduction of the front end: 4, 6, 8 for conv2d; 4 for vgg; the stride for stack;
    for patch it must equal ``patch_stride[0]`` (input frames per row of patches, each row
    giving ``(input_dim - patch_size[1]) // patch_stride[1] + 1`` tokens)."""
    front_end_channels: int = 256
    """Conv channels of the conv2d front end (vgg uses half of it, then all of it)."""
    stack_mode: str = "floor"
    """Frame stacking length rule: "floor" drops a trailing partial stack, "ceil" zero-fills it."""
    patch_size: tuple[int, int] = (16, 16)
    """patch: (time frames, frequency bins) of one patch; AST uses (16, 16)."""
    patch_stride: tuple[int, int] = (10, 10)
    """patch: (time, frequency) stride between patches; AST uses (10, 10) (overlapping)."""
    dim: int = 256
    """Model width C."""
    num_layers: int = 12
    """Number of conformer blocks."""
    num_heads: int = 4
    """Attention heads (dim must be divisible by it)."""
    ffn_dim: int = 1024
    """Inner size of the macaron feed-forward modules."""
    conv_kernel: int = 31
    """Depthwise convolution kernel size (odd)."""
    conv_causal: bool = False
    """Causal depthwise convolution (left padding only); required for streaming."""
    conv_norm: str = "layer_norm"
    """Norm after the depthwise conv: "layer_norm" (exact under streaming) or "batch_norm"."""
    conv_bias: bool = True
    """Biases in the convolution module's three convolutions."""
    pos_type: str = "rel_pos"
    """Positional scheme: "rel_pos", "relative_key", "rotary", "abs" or "none"."""
    rel_left_max: int = 64
    """relative_key: largest distinct distance into the past (frames)."""
    rel_right_max: int = 8
    """relative_key: largest distinct distance into the future (frames)."""
    rotary_base: float = 10000.0
    """rotary: frequency base."""
    dropout: float = 0.1
    """Dropout on the front-end output, inside FFNs and on every sub-module output."""
    attn_dropout: float = 0.0
    """Dropout on attention weights."""
    layer_drop: float = 0.0
    """Stochastic depth: per-sample probability of skipping a block in training."""
    final_norm: bool = False
    """Apply a LayerNorm after the last block (each block already ends in one)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm."""
    length_adapter: LengthAdapterConfig | None = None
    """A length adapter after the blocks (and the final norm), shortening the output and
    possibly changing its width (w2v-BERT 2.0 / SeamlessM4T's adapter); None = off.  It
    cannot stream."""
    chunk_size: int = -1
    """Default attention chunk size in frames after subsampling; -1 = full context."""
    left_context: int = -1
    """Default left context in frames after subsampling; -1 = unlimited."""
    dynamic_chunk: bool = False
    """Dynamic chunk training: draw a chunk size per training batch (WeNet/icefall)."""
    dynamic_chunk_max: int = 25
    """Dynamic chunk training: largest chunk size drawn."""
    dynamic_full_prob: float = 0.5
    """Dynamic chunk training: probability of a full-context batch."""
    dynamic_left_context: bool = False
    """Dynamic chunk training: also draw a left context (whole chunks)."""
    gradient_checkpointing: bool = False
    """Recompute block activations in the backward pass to save memory."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.input_dim <= 0:
            raise ValueError(f"input_dim must be positive, got {self.input_dim}")
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {self.front_end!r}")
        if self.front_end == "conv2d" and self.subsampling_factor not in (4, 6, 8):
            raise ValueError(
                f"conv2d subsampling_factor must be 4, 6 or 8, got {self.subsampling_factor}"
            )
        if self.front_end == "vgg" and self.subsampling_factor != 4:
            raise ValueError(f"vgg subsampling_factor must be 4, got {self.subsampling_factor}")
        if self.front_end == "stack" and self.subsampling_factor < 1:
            raise ValueError(
                f"stack subsampling_factor must be >= 1, got {self.subsampling_factor}"
            )
        if self.stack_mode not in ("floor", "ceil"):
            raise ValueError(f"stack_mode must be 'floor' or 'ceil', got {self.stack_mode!r}")
        for name in ("patch_size", "patch_stride"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise ValueError(f"{name} must be a tuple of two positive ints, got {value!r}")
        if self.front_end == "patch":
            if self.patch_size[1] > self.input_dim:
                raise ValueError(
                    f"patch_size[1] ({self.patch_size[1]}) exceeds input_dim ({self.input_dim})"
                )
            if self.subsampling_factor != self.patch_stride[0]:
                raise ValueError(
                    f"patch subsampling_factor must equal patch_stride[0] "
                    f"({self.patch_stride[0]}), got {self.subsampling_factor}"
                )
        if self.front_end_channels <= 0:
            raise ValueError(f"front_end_channels must be positive, got {self.front_end_channels}")
        if self.dim <= 0 or self.num_layers < 0 or self.num_heads <= 0 or self.ffn_dim <= 0:
            raise ValueError(
                "dim, num_heads and ffn_dim must be positive and num_layers >= 0, got "
                f"{self.dim}, {self.num_heads}, {self.ffn_dim}, {self.num_layers}"
            )
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and positive, got {self.conv_kernel}")
        if self.conv_norm not in ("layer_norm", "batch_norm"):
            raise ValueError(
                f"conv_norm must be 'layer_norm' or 'batch_norm', got {self.conv_norm!r}"
            )
        if self.pos_type not in _POS_TYPES:
            raise ValueError(f"pos_type must be one of {_POS_TYPES}, got {self.pos_type!r}")
        if self.pos_type in ("rel_pos", "abs") and self.dim % 2:
            raise ValueError(f"{self.pos_type} positions need an even dim, got {self.dim}")
        if self.pos_type == "rotary" and (self.dim // self.num_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head dim, got {self.dim // self.num_heads}"
            )
        if self.rel_left_max < 0 or self.rel_right_max < 0:
            raise ValueError(
                f"rel_left_max/rel_right_max must be >= 0, got {self.rel_left_max}/{self.rel_right_max}"
            )
        for name in ("dropout", "attn_dropout", "dynamic_full_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.layer_drop < 1.0:
            raise ValueError(f"layer_drop must be in [0, 1), got {self.layer_drop}")
        if self.chunk_size == 0 or self.chunk_size < -1:
            raise ValueError(f"chunk_size must be positive or -1, got {self.chunk_size}")
        if self.left_context < -1:
            raise ValueError(f"left_context must be >= 0 or -1, got {self.left_context}")
        if self.dynamic_chunk_max < 1:
            raise ValueError(f"dynamic_chunk_max must be >= 1, got {self.dynamic_chunk_max}")
        if self.length_adapter is not None:
            if not isinstance(self.length_adapter, LengthAdapterConfig):
                raise ValueError(
                    "length_adapter must be a LengthAdapterConfig or None, got "
                    f"{type(self.length_adapter).__name__}"
                )
            self.length_adapter.validate(self.dim, self.num_heads)

    @property
    def output_dim(self) -> int:
        """Width of the encoder output: the length adapter's, else ``dim``."""
        if self.length_adapter is None:
            return self.dim
        return self.length_adapter.out_dim(self.dim)

    @property
    def output_subsampling_factor(self) -> int:
        """Input frames per output frame: ``subsampling_factor``, times the length
        adapter's ``stride ** num_layers``."""
        if self.length_adapter is None:
            return self.subsampling_factor
        la = self.length_adapter
        return self.subsampling_factor * la.stride**la.num_layers

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable; tuples become lists there) for saving next to a
        checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformerConfig:
        """Inverse of :meth:`to_dict`, also after a JSON/YAML trip (lists back to tuples);
        unknown keys are an error (a typo must not pass)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ConformerConfig fields: {unknown}")
        data = dict(data)
        if isinstance(data.get("length_adapter"), dict):
            data["length_adapter"] = LengthAdapterConfig.from_dict(data["length_adapter"])
        for f in fields(cls):
            if isinstance(f.default, tuple) and isinstance(data.get(f.name), list):
                data[f.name] = tuple(data[f.name])
        config = cls(**data)
        config.validate()
        return config


def conformer_tiny() -> ConformerConfig:
    """A few-thousand-parameter encoder for unit tests and smoke runs."""
    return ConformerConfig(
        dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        front_end_channels=8,
        dropout=0.0,
    )


def conformer_small() -> ConformerConfig:
    """~20M parameters: 12 x 256, 4 heads, FFN 1024 (icefall/ESPnet "small")."""
    return ConformerConfig(dim=256, num_layers=12, num_heads=4, ffn_dim=1024, conv_kernel=31)


def conformer_base() -> ConformerConfig:
    """~100M parameters: 16 x 512, 8 heads, FFN 2048."""
    return ConformerConfig(dim=512, num_layers=16, num_heads=8, ffn_dim=2048, conv_kernel=31)


def conformer_large() -> ConformerConfig:
    """w2v-BERT 2.0 dimensions (~580M): 24 x 1024, 16 heads, FFN 4096, causal kernel 31,
    Shaw relative_key positions (64 left / 8 right) over 160-dim stacked fbank."""
    return ConformerConfig(
        input_dim=80,
        front_end="stack",
        subsampling_factor=2,
        dim=1024,
        num_layers=24,
        num_heads=16,
        ffn_dim=4096,
        conv_kernel=31,
        conv_causal=True,
        conv_bias=False,
        pos_type="relative_key",
        rel_left_max=64,
        rel_right_max=8,
        dropout=0.0,
        layer_drop=0.1,
    )
