"""TransducerModelConfig -> TransducerModel."""

from __future__ import annotations

from speechfm.models.conformer.speech_encoder import create_speech_encoder
from speechfm.models.transducer.config import TransducerModelConfig
from speechfm.models.transducer.model import Joiner, StatelessPredictor, TransducerModel

__all__ = ["create_transducer_model"]


def create_transducer_model(config: TransducerModelConfig) -> TransducerModel:
    """Validate ``config`` and build the model it describes.

    With global normalisation the CMVN buffers start as the identity; fill them with
    ``model.encoder.set_cmvn`` before training, or load weights.
    """
    config.validate()
    encoder = create_speech_encoder(config.encoder)
    predictor = StatelessPredictor(
        config.vocab_size,
        config.decoder_dim,
        blank_id=config.blank_id,
        context_size=config.context_size,
    )
    joiner = Joiner(encoder.dim, config.decoder_dim, config.joiner_dim, config.vocab_size)
    return TransducerModel(
        encoder,
        predictor,
        joiner,
        vocab_size=config.vocab_size,
        blank_id=config.blank_id,
        ctc_head=config.ctc_head,
    )
