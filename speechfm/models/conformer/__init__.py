"""The shared Conformer encoder: config, named sizes, factory and module."""

from speechfm.models.conformer.config import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)
from speechfm.models.conformer.factory import create_conformer_encoder, create_front_end
from speechfm.models.conformer.model import ConformerEncoder

__all__ = [
    "ConformerConfig",
    "ConformerEncoder",
    "conformer_base",
    "conformer_large",
    "conformer_small",
    "conformer_tiny",
    "create_conformer_encoder",
    "create_front_end",
]
