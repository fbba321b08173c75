"""CTC ASR model: config (with named sizes), factory and module."""

from speechfm.models.ctc.config import (
    CtcModelConfig,
    ctc_base,
    ctc_large,
    ctc_small,
    ctc_tiny,
)
from speechfm.models.ctc.factory import create_ctc_model
from speechfm.models.ctc.model import CtcModel

__all__ = [
    "CtcModel",
    "CtcModelConfig",
    "create_ctc_model",
    "ctc_base",
    "ctc_large",
    "ctc_small",
    "ctc_tiny",
]
