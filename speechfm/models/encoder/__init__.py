"""The encoder-only family: the shared speech front end with no task head.

What a pretrained (or converted) encoder is saved as: ``speechfm.load(dir).embed(audio)``
returns its layers, and ``init_from`` starts any other family's ``encoder.*`` from it.
It has no training loss of its own: self-supervised recipes wrap it with theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from speechfm.models.conformer.speech_encoder import (
    SpeechEncoder,
    SpeechEncoderConfig,
    create_speech_encoder,
)

__all__ = ["EncoderModel", "EncoderModelConfig", "create_encoder_model"]


@dataclass(kw_only=True)
class EncoderModelConfig:
    """Everything needed to build an :class:`EncoderModel`."""

    family: ClassVar[str] = "encoder"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer)."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames."""
        return self.encoder.frame_shift_s


class EncoderModel(nn.Module):
    """A :class:`SpeechEncoder` alone (``encoder.*`` weights, like every family's encoder)."""

    def __init__(self, encoder: SpeechEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def encode(self, feats, x_lens, **kwargs: Any):
        """Encoder output (and layers): :meth:`SpeechEncoder.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def forward(self, batch, **kwargs: Any):
        raise TypeError("an encoder-only model has no training loss; a recipe (e.g. "
                        "self-supervised pretraining) wraps it with one")


def create_encoder_model(config: EncoderModelConfig) -> EncoderModel:
    """Validate ``config`` and build the encoder-only model."""
    config.validate()
    return EncoderModel(create_speech_encoder(config.encoder))
