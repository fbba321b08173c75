"""Configuration of the transducer ASR model (Conformer encoder + stateless predictor + joiner).

The model is icefall's "pruned stateless transducer": the prediction network sees only the
last ``context_size`` tokens (an embedding and a 1-D convolution, no recurrence), and the
joiner adds projected encoder and predictor vectors, applies tanh and a linear layer to the
vocabulary. Like every family the config carries the shared front end's settings (``encoder``), so a
model directory's config.json alone says how to turn audio into the model's input; the
CMVN statistics travel in the weights file as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.specaug import SpecAugmentConfig
from speechfm.models.conformer.config import (
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

__all__ = [
    "TransducerModelConfig",
    "transducer_base",
    "transducer_large",
    "transducer_small",
    "transducer_tiny",
]

FAMILY = "transducer"
"""Value of the ``"family"`` key :meth:`TransducerModelConfig.to_dict` writes."""


@dataclass(kw_only=True)
class TransducerModelConfig:
    """Everything needed to build a :class:`~speechfm.models.transducer.TransducerModel`."""

    family: ClassVar[str] = "transducer"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer)."""
    vocab_size: int
    """Output vocabulary V, blank included: the tokenizer's ``vocab_size``."""
    blank_id: int = 0
    """Id of the blank (0 in every speechfm tokenizer); also the predictor's start context."""
    decoder_dim: int = 512
    """Predictor (stateless decoder) embedding size."""
    context_size: int = 2
    """Tokens the predictor sees: 1 = bigram-like (embedding only), 2 = trigram-like, ..."""
    joiner_dim: int = 512
    """Joiner hidden size: encoder and predictor are projected to it and added."""
    ctc_head: bool = False
    """Add a linear CTC output layer on the encoder, trained with the auxiliary CTC loss
    (``transducer_loss.ctc_scale``; icefall's ``--use-ctc``). Search does not use it."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one token), got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id must be in [0, {self.vocab_size}), got {self.blank_id}")
        for name in ("decoder_dim", "joiner_dim", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames (fbank shift x subsampling)."""
        return self.encoder.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransducerModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def transducer_tiny(vocab_size: int) -> TransducerModelConfig:
    """Tens-of-thousands-parameter model (``conformer_tiny``) for unit tests and smoke runs."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(
            conformer=conformer_tiny(),
            specaug=SpecAugmentConfig(freq_mask_width=10, num_time_masks=2),
        ),
        vocab_size=vocab_size,
        decoder_dim=16,
        joiner_dim=32,
    )


def transducer_small(vocab_size: int) -> TransducerModelConfig:
    """~20M-parameter encoder (``conformer_small``: 12 x 256) with a 256-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_small()), vocab_size=vocab_size, decoder_dim=256, joiner_dim=256
    )


def transducer_base(vocab_size: int) -> TransducerModelConfig:
    """~100M-parameter encoder (``conformer_base``: 16 x 512) with a 512-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_base()), vocab_size=vocab_size, decoder_dim=512, joiner_dim=512
    )


def transducer_large(vocab_size: int) -> TransducerModelConfig:
    """w2v-BERT-2.0-sized encoder (``conformer_large``: 24 x 1024) with a 640-dim joiner.

    Its causal convolutions make it streamable with chunked attention.
    """
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_large()), vocab_size=vocab_size, decoder_dim=512, joiner_dim=640
    )
