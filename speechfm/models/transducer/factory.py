"""TransducerModelConfig -> TransducerModel."""

from __future__ import annotations

from speechfm.models.conformer.speech_encoder import create_speech_encoder
from speechfm.models.transducer.config import TransducerModelConfig
from speechfm.models.transducer.model import Joiner, StatelessPredictor, TransducerModel

__all__ = ["add_config_adapters", "create_transducer_model"]


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
    second = None
    if config.second_encoder is not None:
        from speechfm.models.conformer.factory import create_conformer_encoder

        second = create_conformer_encoder(config.second_encoder)
    model = TransducerModel(
        encoder,
        predictor,
        joiner,
        vocab_size=config.vocab_size,
        blank_id=config.blank_id,
        ctc_head=config.ctc_head,
        second_encoder=second,
    )
    add_config_adapters(model, config.adapters)
    return model


def add_config_adapters(model: TransducerModel, specs) -> None:
    """Build the adapters a config lists (``languages``: one per language; ``encoders``:
    "first" and/or "second", default every encoder the model has)."""
    from speechfm.nn.adapters import adapter_factory

    hosts = {"first": model.encoder.conformer, "second": model.second_encoder}
    for spec in specs:
        for which in spec.get("encoders") or ["first", "second"]:
            host = hosts[which]
            if host is None:
                continue
            host.add_adapter(spec["name"], adapter_factory(spec["kind"], **(spec.get("options") or {})),
                             points=spec["points"], layers=spec.get("layers"),
                             languages=spec.get("languages"))
