"""Configuration of ASiT pretraining (Atito et al., "ASiT: Local-Global Audio Spectrogram
vIsion Transformer for Event Classification") on the spectrogram transformer, and its sizes.

The model is an AST backbone (:class:`~speechfm.models.ast.AstModelConfig` with no
classifier) plus three heads: a global DINO head on the pooled embedding, a local DINO
head on every patch token and a linear reconstruction head from each patch token to its
16 x 16 input patch. The student sees two views of each clip corrupted by group masked
model learning (GMML, :class:`GmmlConfig`); an EMA teacher (the recipe's) sees the clean
views. The three loss terms (:class:`AsitLossConfig`) have their own weights, so the
paper's ablation (reconstruction only / + local / + global) is a change of weights.

Named sizes (``asit_mini`` / ``asit_tiny`` / ``asit_small``) put heads scaled to CPU runs on
the AST sizes ``ast_mini`` / ``ast_tiny`` / ``ast_small`` (SpecAugment off: GMML is the
corruption, and the teacher must see exactly the student's view without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.models.ast.config import AstModelConfig, ast_mini, ast_small, ast_tiny

__all__ = [
    "MASK_FILLS",
    "MASK_SHAPES",
    "AsitLossConfig",
    "AsitModelConfig",
    "AsitViewConfig",
    "GmmlConfig",
    "asit_mini",
    "asit_small",
    "asit_tiny",
]

MASK_SHAPES = ("block", "time", "freq")
MASK_FILLS = ("noise", "zeros")


@dataclass(kw_only=True)
class GmmlConfig:
    """Group masked model learning: which parts of the (frames, bins) input the student
    loses, and what replaces them (see :mod:`speechfm.models.asit.masking`)."""

    shape: str = "block"
    """"block": random rectangles of cells; "time": whole time columns (all bins of runs
    of cells); "freq": whole frequency rows (all frames of runs of cells)."""
    fill: str = "noise"
    """"noise": Gaussian noise with each view's own mean and standard deviation (GMML);
    "zeros": zero (the normalised input's mean)."""
    min_fraction: float = 0.5
    """Lower end of the drawn fraction of cells masked per view."""
    max_fraction: float = 0.7
    """Upper end of the drawn fraction of cells masked per view."""
    max_block_fraction: float = 0.3
    """Largest block side, as a fraction of the cell grid's side (at least one cell);
    blocks of "time"/"freq" masking are runs of this many cells at most."""
    patch_threshold: float = 0.5
    """A patch counts as masked (local distillation) when more than this fraction of its
    area is masked ("mostly"); 0 = any masked element."""

    def validate(self) -> None:
        if self.shape not in MASK_SHAPES:
            raise ValueError(f"masking.shape must be one of {MASK_SHAPES}, got {self.shape!r}")
        if self.fill not in MASK_FILLS:
            raise ValueError(f"masking.fill must be one of {MASK_FILLS}, got {self.fill!r}")
        if not 0.0 <= self.min_fraction <= self.max_fraction <= 1.0:
            raise ValueError("need 0 <= masking.min_fraction <= masking.max_fraction <= 1, got "
                             f"{self.min_fraction} and {self.max_fraction}")
        if not 0.0 < self.max_block_fraction <= 1.0:
            raise ValueError(f"masking.max_block_fraction must be in (0, 1], got "
                             f"{self.max_block_fraction}")
        if not 0.0 <= self.patch_threshold < 1.0:
            raise ValueError(f"masking.patch_threshold must be in [0, 1), got "
                             f"{self.patch_threshold}")


@dataclass(kw_only=True)
class AsitViewConfig:
    """The views of one clip (student: masked, teacher: clean), made from its fbank."""

    num_views: int = 2
    """Views per clip; the global loss pairs the teacher's view i with the student's view
    j != i (with one view: the same view)."""
    max_shift: int = 20
    """Each view starts at a random frame offset in +-this many frames (of a random crop
    of ``target_frames`` for longer clips); frames shifted in are zero fbank (padding)."""
    gain_db: float = 6.0
    """Each view gets a random gain, uniform in +-this many dB (added to the log-mel values)."""

    def validate(self) -> None:
        if self.num_views < 1:
            raise ValueError(f"views.num_views must be >= 1, got {self.num_views}")
        if self.max_shift < 0 or self.gain_db < 0:
            raise ValueError("views.max_shift and views.gain_db must be >= 0")


@dataclass(kw_only=True)
class AsitLossConfig:
    """Weights, temperatures and centring of the three loss terms."""

    global_weight: float = 1.0
    """Global (CLS / pooled) distillation across views."""
    local_weight: float = 1.0
    """Local per-patch distillation at the student's masked patches."""
    recon_weight: float = 2.0
    """L1 reconstruction of the masked input elements."""
    student_temperature: float = 0.1
    """Softmax temperature of the student's prototype scores."""
    teacher_temperature_start: float = 0.04
    """Teacher temperature at step 0 (sharpening)."""
    teacher_temperature: float = 0.07
    """Teacher temperature after the warm-up (and in validation)."""
    teacher_temperature_warmup_steps: int = 100
    """Updates over which the teacher temperature rises linearly to its final value."""
    center_momentum: float = 0.9
    """EMA momentum of the centres of the teacher's outputs."""

    def validate(self) -> None:
        weights = (self.global_weight, self.local_weight, self.recon_weight)
        if min(weights) < 0 or max(weights) <= 0:
            raise ValueError(f"loss weights must be >= 0 and one positive, got {weights}")
        temps = (self.student_temperature, self.teacher_temperature_start,
                 self.teacher_temperature)
        if min(temps) <= 0:
            raise ValueError(f"loss temperatures must be > 0, got {temps}")
        if self.teacher_temperature_warmup_steps < 0:
            raise ValueError("loss.teacher_temperature_warmup_steps must be >= 0")
        if not 0.0 <= self.center_momentum < 1.0:
            raise ValueError(f"loss.center_momentum must be in [0, 1), got {self.center_momentum}")


@dataclass(kw_only=True)
class AsitModelConfig:
    """Everything needed to build an :class:`~speechfm.models.asit.AsitModel`."""

    family: ClassVar[str] = "asit"

    backbone: AstModelConfig = field(default_factory=lambda: ast_tiny(num_classes=0))
    """The spectrogram transformer (``num_classes`` 0; it becomes ``model.encoder``)."""
    head_hidden_dim: int = 512
    """Hidden width of the DINO heads' MLPs."""
    head_bottleneck_dim: int = 128
    """Width of the L2-normalised bottleneck before the prototypes."""
    head_layers: int = 3
    """Linear layers of each head's MLP (GELU between them)."""
    num_prototypes: int = 1024
    """Outputs K of the global head (weight-normalised last layer)."""
    local_num_prototypes: int = 1024
    """Outputs of the local (per-patch) head."""
    masking: GmmlConfig = field(default_factory=GmmlConfig)
    """GMML corruption of the student's views."""
    views: AsitViewConfig = field(default_factory=AsitViewConfig)
    """Views per clip (time shift / crop and gain)."""
    loss: AsitLossConfig = field(default_factory=AsitLossConfig)
    """Loss weights, temperatures and centring."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.backbone.validate()
        if self.backbone.num_classes:
            raise ValueError("backbone.num_classes must be 0 (ASiT pretrains a backbone)")
        for name in ("head_hidden_dim", "head_bottleneck_dim", "head_layers", "num_prototypes",
                     "local_num_prototypes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.masking.validate()
        self.views.validate()
        self.loss.validate()

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two rows of patches (the backbone's)."""
        return self.backbone.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AsitModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def _backbone(config: AstModelConfig) -> AstModelConfig:
    config.specaugment = False
    return config


def asit_small() -> AsitModelConfig:
    """``ast_small`` (6 x 256, one-second clips) with 512-wide heads, 1024 prototypes."""
    return AsitModelConfig(backbone=_backbone(ast_small(num_classes=0)))


def asit_tiny() -> AsitModelConfig:
    """``ast_tiny`` (4 x 192, one-second clips) with 512-wide heads, 1024 prototypes:
    about 3 M parameters, 1.8 M of them the backbone."""
    return AsitModelConfig(backbone=_backbone(ast_tiny(num_classes=0)))


def asit_mini() -> AsitModelConfig:
    """``ast_mini`` (2 x 32 over 32 bins, 40 frames) with 64-wide heads: for tests."""
    return AsitModelConfig(backbone=_backbone(ast_mini(num_classes=0)), head_hidden_dim=64,
                           head_bottleneck_dim=32, num_prototypes=64, local_num_prototypes=64,
                           loss=AsitLossConfig(teacher_temperature_warmup_steps=10))
