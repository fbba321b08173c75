"""Exponential moving average of a model's weights (EMA teachers, Polyak averaging).

Self-distillation recipes (ASiT, DINO-style teachers, data2vec) keep a teacher whose
weights follow the student's: ``teacher = m * teacher + (1 - m) * student`` after every
update, with the momentum ``m`` rising towards 1 over training (:func:`cosine_momentum`).
:class:`EmaWeights` holds that average (float32 or wider, whatever the model's dtype)
and is checkpointed by the run function (``stateful={"ema": ema}``) so that resuming is
exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["EmaWeights", "cosine_momentum"]


def cosine_momentum(step: int, total_steps: int, *, start: float = 0.996, end: float = 1.0) -> float:
    """BYOL/DINO's teacher momentum: ``start`` at step 0 rising to ``end`` on a cosine by
    ``total_steps`` (and ``end`` after it)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    t = min(max(step, 0), total_steps) / total_steps
    return end - (end - start) * (math.cos(math.pi * t) + 1) / 2


class EmaWeights:
    """An exponential moving average of ``model``'s floating-point parameters and buffers.

    Args:
        model: the model to follow (its current weights start the average).
        decay: default momentum ``m`` of :meth:`update` (0 <= m <= 1).
        dtype: storage dtype of the average (float32 default: bf16 models average
            without losing small updates).
        include_buffers: also average floating-point buffers (BatchNorm statistics);
            integer buffers are copied.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, dtype: torch.dtype = torch.float32,
                 include_buffers: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.include_buffers = include_buffers
        self.num_updates = 0
        with torch.no_grad():
            self.shadow = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).clone()
                           for k, v in self._tracked(model).items()}

    def _tracked(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = dict(model.named_parameters())
        if self.include_buffers:
            out.update(dict(model.named_buffers()))
        return out

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """``shadow = m * shadow + (1 - m) * weights`` (integer buffers copied)."""
        m = self.decay if decay is None else float(decay)
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {m}")
        current = self._tracked(model)
        if current.keys() != self.shadow.keys():
            raise ValueError("the model's parameters changed since the EMA was created")
        for key, value in current.items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.mul_(m).add_(value.detach().to(shadow.dtype), alpha=1.0 - m)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the average into ``model`` (e.g. the teacher, or for evaluation)."""
        current = self._tracked(model)
        for key, value in current.items():
            value.copy_(self.shadow[key].to(value.dtype))

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise ValueError("EMA state does not match the model's tensors")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for key, value in shadow.items():
            self.shadow[key].copy_(value)
