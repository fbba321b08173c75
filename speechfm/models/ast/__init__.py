"""The spectrogram transformer family (AST / ASiT backbone + classifier): family ``"ast"``."""

from speechfm.models.ast.config import (
    POOLINGS,
    AstModelConfig,
    ast_base,
    ast_fbank,
    ast_mini,
    ast_small,
    ast_tiny,
)
from speechfm.models.ast.model import (
    AstModel,
    SpectrogramTransformer,
    create_ast_model,
    interpolate_positions,
)

__all__ = [
    "POOLINGS",
    "AstModel",
    "AstModelConfig",
    "SpectrogramTransformer",
    "ast_base",
    "ast_fbank",
    "ast_mini",
    "ast_small",
    "ast_tiny",
    "create_ast_model",
    "interpolate_positions",
]
