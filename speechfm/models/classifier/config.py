"""Configuration of the Conformer audio classifier (shared speech front end + pooling +
classifier head), and its named sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.fbank import FbankConfig
from speechfm.features.specaug import SpecAugmentConfig
from speechfm.models.conformer.config import ConformerConfig, conformer_tiny
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

__all__ = ["POOLINGS", "ClassifierModelConfig", "classifier_kws", "classifier_small",
           "classifier_tiny"]

POOLINGS = ("mean", "attention")


@dataclass(kw_only=True)
class ClassifierModelConfig:
    """Everything needed to build a :class:`~speechfm.models.classifier.SpeechClassifier`."""

    family: ClassVar[str] = "classifier"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer): the same
    one the ASR and self-supervised families hold, so their encoders start it."""
    num_classes: int = 0
    """K classes; 0 = no head (an embedding model)."""
    pooling: str = "mean"
    """Utterance embedding from the encoder frames: "mean" over the valid frames, or
    "attention" (a learned single-query softmax over the frames)."""
    head_dropout: float = 0.1
    """Dropout on the pooled embedding before the head."""
    adapters: list[dict[str, Any]] = field(default_factory=list)
    """Adapters in the Conformer blocks, built with the model (so their weights load with
    it): each ``{"name": str, "kind": bottleneck|conv|lora|prompt|prefix, "points": [...],
    "options": {...}, "layers": [...] or null}`` (see :mod:`speechfm.nn.adapters`)."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        from speechfm.nn.adapters import CONFORMER_POINTS, check_adapter_specs

        check_adapter_specs(self.adapters, CONFORMER_POINTS)

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames."""
        return self.encoder.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def classifier_tiny(num_classes: int = 0) -> ClassifierModelConfig:
    """A few-thousand-parameter classifier (``conformer_tiny`` on 80-bin fbank) for tests."""
    return ClassifierModelConfig(
        encoder=SpeechEncoderConfig(
            normalization="utterance", conformer=conformer_tiny(),
            specaug=SpecAugmentConfig(freq_mask_width=10, num_time_masks=2)),
        num_classes=num_classes, head_dropout=0.0)


def classifier_kws(num_classes: int = 0) -> ClassifierModelConfig:
    """Keyword spotting on 2 CPU cores: 64-bin fbank with per-utterance normalisation,
    x4 convolution subsampling (32 channels), 6 Conformer blocks of width 144 (kernel 15),
    about 3.1M parameters; SpecAugment sized for one-second clips."""
    return ClassifierModelConfig(
        encoder=SpeechEncoderConfig(
            fbank=FbankConfig(num_mel_bins=64), normalization="utterance",
            specaug=SpecAugmentConfig(num_freq_masks=2, freq_mask_width=12, num_time_masks=2,
                                      time_mask_multiplicity=1.0, time_mask_max_frac=0.2),
            conformer=ConformerConfig(input_dim=64, dim=144, num_layers=6, num_heads=4,
                                      ffn_dim=576, conv_kernel=15, front_end_channels=32,
                                      dropout=0.1)),
        num_classes=num_classes)


def classifier_small(num_classes: int = 0) -> ClassifierModelConfig:
    """An 80-bin, 12 x 256 Conformer classifier (``conformer_small``'s shape, ~20M
    parameters): speaker, language or event classification on more data."""
    from speechfm.models.conformer.config import conformer_small

    return ClassifierModelConfig(
        encoder=SpeechEncoderConfig(normalization="utterance", conformer=conformer_small()),
        num_classes=num_classes)
