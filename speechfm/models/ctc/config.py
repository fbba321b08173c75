"""Configuration of the CTC ASR model (shared speech front end + linear head), and its named sizes.

The config carries the front end's settings (``encoder``: fbank, normalisation,
SpecAugment, Conformer), so a model directory's config.json alone says how to turn audio
into the model's input; the CMVN statistics travel in the weights file as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.specaug import SpecAugmentConfig
from speechfm.models.conformer.config import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

__all__ = ["CtcModelConfig", "ctc_base", "ctc_large", "ctc_small", "ctc_tiny"]


@dataclass(kw_only=True)
class CtcModelConfig:
    """Everything needed to build a :class:`~speechfm.models.ctc.CtcModel`."""

    family: ClassVar[str] = "ctc"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer)."""
    vocab_size: int
    """Output vocabulary V, blank (id 0) included: the tokenizer's ``vocab_size``."""
    head_dropout: float = 0.1
    """Dropout on the encoder output before the output projection."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one token), got {self.vocab_size}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames (fbank shift x subsampling)."""
        return self.encoder.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CtcModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def _encoder(conformer: ConformerConfig, **kw: Any) -> SpeechEncoderConfig:
    return SpeechEncoderConfig(conformer=conformer, **kw)


def ctc_tiny(vocab_size: int) -> CtcModelConfig:
    """Few-thousand-parameter model (``conformer_tiny``) for unit tests and smoke runs."""
    return CtcModelConfig(
        encoder=_encoder(conformer_tiny(),
                         specaug=SpecAugmentConfig(freq_mask_width=10, num_time_masks=2)),
        vocab_size=vocab_size,
        head_dropout=0.0,
    )


def ctc_small(vocab_size: int) -> CtcModelConfig:
    """~20M-parameter encoder (``conformer_small``: 12 x 256)."""
    return CtcModelConfig(encoder=_encoder(conformer_small()), vocab_size=vocab_size)


def ctc_base(vocab_size: int) -> CtcModelConfig:
    """~100M-parameter encoder (``conformer_base``: 16 x 512)."""
    return CtcModelConfig(encoder=_encoder(conformer_base()), vocab_size=vocab_size)


def ctc_large(vocab_size: int) -> CtcModelConfig:
    """w2v-BERT-2.0-sized encoder (``conformer_large``: 24 x 1024, stacked fbank)."""
    return CtcModelConfig(encoder=_encoder(conformer_large()), vocab_size=vocab_size,
                          head_dropout=0.0)
