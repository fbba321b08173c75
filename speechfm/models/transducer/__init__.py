"""Transducer ASR model (Conformer + stateless predictor + joiner): config, factory, modules."""

from speechfm.models.transducer.config import (
    TransducerModelConfig,
    transducer_base,
    transducer_large,
    transducer_small,
    transducer_tiny,
)
from speechfm.models.transducer.factory import create_transducer_model
from speechfm.models.transducer.model import Joiner, StatelessPredictor, TransducerModel

__all__ = [
    "Joiner",
    "StatelessPredictor",
    "TransducerModel",
    "TransducerModelConfig",
    "create_transducer_model",
    "transducer_base",
    "transducer_large",
    "transducer_small",
    "transducer_tiny",
]
