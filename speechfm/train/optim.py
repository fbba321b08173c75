"""Optimizer construction: Adam/AdamW with weight decay kept off norms, biases and scales.

Decaying a LayerNorm gain or a bias towards zero only hurts (it is not a capacity
regulariser for those), so the usual practice (BERT, wav2vec2, nanoGPT) applies weight
decay to matrices and convolution kernels only. :func:`param_groups` does that split and
:func:`create_optimizer` builds the optimizer from an :class:`OptimizerConfig`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["OptimizerConfig", "create_optimizer", "param_groups"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # Custom norms (e.g. a project ScaledLayerNorm) are caught by name.
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


@dataclass(kw_only=True)
class OptimizerConfig:
    """Settings of an Adam-family optimizer."""

    kind: str = "adamw"
    """``"adamw"`` (decoupled weight decay) or ``"adam"`` (L2 penalty added to the gradient)."""
    lr: float = 1e-3
    """Peak learning rate; schedulers scale it by a factor in [0, 1]."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam moment decay rates (beta1, beta2)."""
    eps: float = 1e-8
    """Adam denominator epsilon."""
    weight_decay: float = 0.01
    """Weight decay applied to the decayed group (matrices and conv kernels)."""
    no_decay: Sequence[str] = field(default_factory=tuple)
    """Extra parameter-name glob patterns kept out of weight decay (e.g. ``"*.pos_bias_u"``)."""
    fused: bool | None = None
    """Use the fused CUDA/CPU kernel; ``None`` lets torch choose."""

    def validate(self) -> None:
        if self.kind not in ("adamw", "adam"):
            raise ValueError(f"optimizer kind must be 'adamw' or 'adam', got {self.kind!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def param_groups(
    model: nn.Module, weight_decay: float, *, no_decay: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    A parameter is kept out of weight decay when it belongs to a normalisation module
    (BatchNorm/LayerNorm/GroupNorm/RMSNorm or any module whose class name contains
    "norm"), is named ``*bias``, has fewer than 2 dimensions (gains, scales, scalar
    temperatures), or matches one of the ``no_decay`` glob patterns. Frozen parameters
    (``requires_grad=False``) are left out entirely. Shared (tied) parameters appear once.

    Args:
        model: the module to optimise (unwrapped or DDP/FSDP-wrapped).
        weight_decay: decay of the decayed group.
        no_decay: extra glob patterns over full parameter names.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "names": [...]},
        {"params": [...], "weight_decay": 0.0, "names": [...]}]`` (empty groups dropped).
    """
    patterns = tuple(no_decay)
    norm_params: set[int] = set()
    for module in model.modules():
        if _is_norm(module):
            norm_params.update(id(p) for p in module.parameters(recurse=False))

    decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    skip: list[nn.Parameter] = []
    skip_names: list[str] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        excluded = (
            id(param) in norm_params
            or name.endswith("bias")
            or param.ndim < 2
            or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        )
        if excluded:
            skip.append(param)
            skip_names.append(name)
        else:
            decay.append(param)
            decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "names": decay_names},
        {"params": skip, "weight_decay": 0.0, "names": skip_names},
    ]
    return [g for g in groups if g["params"]]


def create_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Build an Adam or AdamW optimizer over ``model`` with the norm/bias decay split.

    Raises:
        ValueError: when the config is invalid or the model has no trainable parameters.
    """
    config.validate()
    groups = param_groups(model, config.weight_decay, no_decay=config.no_decay)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimise")
    for group in groups:
        # Names serve inspection only; torch would otherwise carry them into every
        # optimizer state_dict.
        group.pop("names")
    cls = torch.optim.AdamW if config.kind == "adamw" else torch.optim.Adam
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": tuple(config.betas), "eps": config.eps}
    if config.fused is not None:
        kwargs["fused"] = config.fused
    return cls(groups, **kwargs)
