"""The shared Conformer encoder: config, named sizes, factory, module and HF interop."""

from speechfm.models.conformer.config import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)
from speechfm.models.conformer.factory import create_conformer_encoder, create_front_end
from speechfm.models.conformer.interop import (
    conformer_config_from_hf,
    hf_config_from_conformer,
    load_hf_weights,
    state_dict_from_hf,
    state_dict_to_hf,
)
from speechfm.models.conformer.model import ConformerEncoder

__all__ = [
    "ConformerConfig",
    "ConformerEncoder",
    "conformer_base",
    "conformer_config_from_hf",
    "conformer_large",
    "conformer_small",
    "conformer_tiny",
    "create_conformer_encoder",
    "create_front_end",
    "hf_config_from_conformer",
    "load_hf_weights",
    "state_dict_from_hf",
    "state_dict_to_hf",
]
