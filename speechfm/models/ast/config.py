"""Configuration of the spectrogram transformer (AST / ASiT) classifier, and its sizes.

The defaults are transformers' ``ASTConfig`` / MIT/ast-finetuned-audioset: 128-bin Kaldi
fbank at 16 kHz (Hanning window, edges snipped, no dither), normalised as
``(x - mean) / (2 std)`` with the AudioSet statistics, padded or cut to ``target_frames``,
16 x 16 patches with stride 10 in time and frequency, a CLS and a distillation token,
learned absolute positions and twelve 768-wide pre-norm transformer blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.fbank import FbankConfig
from speechfm.features.specaug import SpecAugmentConfig

__all__ = [
    "POOLINGS",
    "AstModelConfig",
    "ast_base",
    "ast_fbank",
    "ast_mini",
    "ast_small",
    "ast_tiny",
]

POOLINGS = ("cls_dist", "cls", "mean")

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def ast_fbank(sample_rate: int = 16000, num_mel_bins: int = 128) -> FbankConfig:
    """AST's features: ``torchaudio.compliance.kaldi.fbank(window_type="hanning")`` on
    [-1, 1] samples (what transformers' ``ASTFeatureExtractor`` computes)."""
    return FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                       window_type="hanning", snip_edges=True, dither=0.0)


@dataclass(kw_only=True)
class AstModelConfig:
    """Everything needed to build an :class:`~speechfm.models.ast.AstModel`."""

    family: ClassVar[str] = "ast"

    fbank: FbankConfig = field(default_factory=ast_fbank)
    """Feature settings of the input (128-bin AST fbank by default)."""
    norm_mean: float = AUDIOSET_MEAN
    """Features are normalised as ``(x - norm_mean) / (2 * norm_std)`` (AST's convention)."""
    norm_std: float = AUDIOSET_STD
    """See ``norm_mean``."""
    target_frames: int = 1024
    """Every input is padded (with zero fbank, i.e. before normalisation, as AST does) or
    cut to this many frames; the positional embeddings cover exactly its patch grid."""
    specaugment: bool = True
    """Frequency/time masking of the normalised features in training mode."""
    specaug: SpecAugmentConfig = field(
        default_factory=lambda: SpecAugmentConfig(num_freq_masks=2, freq_mask_width=24,
                                                  num_time_masks=2, time_mask_multiplicity=1.0,
                                                  time_mask_max_frac=0.2))
    """SpecAugment settings (AST masks up to 48 bins / 192 frames of 1024; scaled here)."""
    patch_size: tuple[int, int] = (16, 16)
    """(time frames, frequency bins) of one patch."""
    patch_stride: tuple[int, int] = (10, 10)
    """(time, frequency) stride between patches (overlapping when below ``patch_size``)."""
    dim: int = 768
    """Model width C."""
    num_layers: int = 12
    """Transformer blocks."""
    num_heads: int = 12
    """Attention heads."""
    mlp_dim: int = 3072
    """Inner size of the GELU MLP."""
    dropout: float = 0.0
    """Dropout on the embeddings, inside the MLP and on every sub-module output."""
    attn_dropout: float = 0.0
    """Dropout on attention weights."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm."""
    distillation_token: bool = True
    """A second learned token (DeiT's distillation token) after the CLS token."""
    pooling: str = "cls_dist"
    """Utterance embedding: "cls_dist" (mean of the CLS and distillation tokens, AST),
    "cls", or "mean" (mean over the patch tokens)."""
    num_classes: int = 0
    """Classes of the output layer (LayerNorm + Linear on the pooled embedding); 0 = a
    backbone without one (pretraining, embeddings)."""
    head_dropout: float = 0.0
    """Dropout on the pooled embedding before the output layer."""
    adapters: list[dict[str, Any]] = field(default_factory=list)
    """Adapters in the blocks, built with the model (so their weights load with it): each
    ``{"name": str, "kind": bottleneck|conv|lora|prompt|prefix, "points": [...],
    "options": {...}, "layers": [...] or null}`` (see :mod:`speechfm.nn.adapters`)."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.fbank.validate()
        self.specaug.validate()
        if self.norm_std <= 0:
            raise ValueError(f"norm_std must be positive, got {self.norm_std}")
        for name in ("patch_size", "patch_stride"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f"{name} must be two positive ints, got {value!r}")
            setattr(self, name, value)
        if self.patch_size[1] > self.fbank.feature_dim:
            raise ValueError(f"patch height {self.patch_size[1]} exceeds the "
                             f"{self.fbank.feature_dim} feature bins")
        if self.target_frames < self.patch_size[0]:
            raise ValueError(f"target_frames ({self.target_frames}) is shorter than one patch "
                             f"({self.patch_size[0]} frames)")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        for name in ("num_layers", "mlp_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dropout", "attn_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling == "cls_dist" and not self.distillation_token:
            raise ValueError("pooling 'cls_dist' needs distillation_token: true")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        from speechfm.nn.adapters import TRANSFORMER_POINTS, check_adapter_specs

        check_adapter_specs(self.adapters, TRANSFORMER_POINTS)

    @property
    def grid(self) -> tuple[int, int]:
        """(time, frequency) patches of one input of ``target_frames`` frames."""
        pt = (self.target_frames - self.patch_size[0]) // self.patch_stride[0] + 1
        pf = (self.fbank.feature_dim - self.patch_size[1]) // self.patch_stride[1] + 1
        return pt, pf

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two rows of patches (fbank shift x time stride)."""
        return self.fbank.frame_shift * self.patch_stride[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AstModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def ast_base(num_classes: int = 527) -> AstModelConfig:
    """AST-Base (MIT/ast-finetuned-audioset-10-10-0.4593's shape): 86M parameters."""
    return AstModelConfig(num_classes=num_classes)


def ast_small(num_classes: int = 0, target_frames: int = 100) -> AstModelConfig:
    """A 6-layer, 256-wide spectrogram transformer for CPU experiments (about 5M
    parameters), one-second clips by default."""
    return AstModelConfig(dim=256, num_layers=6, num_heads=4, mlp_dim=1024, dropout=0.1,
                          target_frames=target_frames, num_classes=num_classes)


def ast_tiny(num_classes: int = 0, target_frames: int = 100) -> AstModelConfig:
    """A 4-layer, 192-wide model (about 1.8M parameters) for quick CPU runs."""
    return AstModelConfig(dim=192, num_layers=4, num_heads=3, mlp_dim=768, dropout=0.1,
                          target_frames=target_frames, num_classes=num_classes)


def ast_mini(num_classes: int = 0, target_frames: int = 40) -> AstModelConfig:
    """A 2-layer, 32-wide model over 32 mel bins for unit tests."""
    return AstModelConfig(fbank=ast_fbank(num_mel_bins=32), dim=32, num_layers=2,
                          num_heads=2, mlp_dim=64, target_frames=target_frames,
                          num_classes=num_classes,
                          specaug=SpecAugmentConfig(num_freq_masks=1, freq_mask_width=4,
                                                    num_time_masks=1, time_mask_max_frac=0.2))
