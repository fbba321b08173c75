"""CtcModelConfig -> CtcModel."""

from __future__ import annotations

from speechfm.models.conformer.speech_encoder import create_speech_encoder
from speechfm.models.ctc.config import CtcModelConfig
from speechfm.models.ctc.model import CtcModel

__all__ = ["create_ctc_model"]


def create_ctc_model(config: CtcModelConfig) -> CtcModel:
    """Validate ``config`` and build the model it describes.

    With global normalisation the CMVN buffers start as the identity; fill them with
    ``model.encoder.set_cmvn`` before training, or load weights.
    """
    config.validate()
    return CtcModel(create_speech_encoder(config.encoder), vocab_size=config.vocab_size,
                    head_dropout=config.head_dropout)
