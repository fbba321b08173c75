"""ASiT pretraining (GMML + local/global self-distillation + reconstruction) of the
spectrogram transformer: family ``"asit"`` (config with named sizes, masking, model,
EMA teacher)."""

from speechfm.models.asit.config import (
    MASK_FILLS,
    MASK_SHAPES,
    AsitLossConfig,
    AsitModelConfig,
    AsitViewConfig,
    GmmlConfig,
    asit_mini,
    asit_small,
    asit_tiny,
)
from speechfm.models.asit.masking import (
    cell_grid,
    draw_cell_mask,
    fill_masked,
    gmml_mask,
    patch_mask,
)
from speechfm.models.asit.model import (
    AsitModel,
    AsitTeacher,
    DinoHead,
    create_asit_model,
    fold_patches,
    make_views,
)

__all__ = [
    "MASK_FILLS",
    "MASK_SHAPES",
    "AsitLossConfig",
    "AsitModel",
    "AsitModelConfig",
    "AsitTeacher",
    "AsitViewConfig",
    "DinoHead",
    "GmmlConfig",
    "asit_mini",
    "asit_small",
    "asit_tiny",
    "cell_grid",
    "create_asit_model",
    "draw_cell_mask",
    "fill_masked",
    "fold_patches",
    "gmml_mask",
    "make_views",
    "patch_mask",
]
