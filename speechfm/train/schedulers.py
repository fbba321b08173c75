"""Learning-rate schedules: Noam, tri-stage (wav2vec2 / w2v-BERT fine-tuning), cosine, constant.

A *schedule* is a frozen dataclass mapping the number of optimizer updates already taken
(``step`` = 0, 1, 2, ...) to a factor of the peak learning rate; the learning rate used
for the next update is ``peak_lr * schedule(step)``. Schedules are plain callables, so
``torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)`` works with them unchanged; the
small :class:`StepScheduler` here does the same with a readable state_dict (``{"step": n}``)
and no epoch/step ambiguity.

Step convention: call ``scheduler.step()`` once after every *successful* optimizer update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "NoamSchedule",
    "SchedulerConfig",
    "StepScheduler",
    "TriStageSchedule",
    "create_scheduler",
    "make_schedule",
]


def _check_nonneg(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class NoamSchedule:
    """Transformer (Noam) schedule: linear warmup, then inverse-square-root decay.

    ``factor(step) = min((step + 1) / warmup_steps, sqrt(warmup_steps / (step + 1)))``,
    normalised so that the ``warmup_steps``-th update uses exactly the peak rate (the
    classic ``d_model ** -0.5`` scale is folded into the peak lr).
    """

    warmup_steps: int
    """Number of warmup updates (>= 1)."""

    def __post_init__(self) -> None:
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        n = step + 1
        return min(n / self.warmup_steps, math.sqrt(self.warmup_steps / n))


@dataclass(frozen=True, kw_only=True)
class TriStageSchedule:
    """Warmup-hold-decay schedule used to fine-tune wav2vec2 / w2v-BERT.

    Linear warmup from ``init_scale`` to 1 over ``warmup_steps``, hold at 1 for
    ``hold_steps``, exponential decay from 1 to ``final_scale`` over ``decay_steps``, then
    constant ``final_scale``.
    """

    warmup_steps: int
    """Updates of linear warmup."""
    hold_steps: int
    """Updates held at the peak rate."""
    decay_steps: int
    """Updates of exponential decay."""
    init_scale: float = 0.01
    """Factor at step 0."""
    final_scale: float = 0.05
    """Factor reached at the end of the decay and kept afterwards (> 0)."""

    def __post_init__(self) -> None:
        _check_nonneg(
            warmup_steps=self.warmup_steps, hold_steps=self.hold_steps, decay_steps=self.decay_steps
        )
        if not 0.0 <= self.init_scale <= 1.0:
            raise ValueError(f"init_scale must be in [0, 1], got {self.init_scale}")
        if not 0.0 < self.final_scale <= 1.0:
            raise ValueError(f"final_scale must be in (0, 1], got {self.final_scale}")

    @classmethod
    def from_ratios(
        cls,
        total_steps: int,
        ratios: tuple[float, float, float] = (0.1, 0.4, 0.5),
        *,
        init_scale: float = 0.01,
        final_scale: float = 0.05,
    ) -> TriStageSchedule:
        """Split ``total_steps`` into warmup/hold/decay by ``ratios`` (which must sum to 1)."""
        if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
            raise ValueError(
                f"phase ratios must be 3 non-negative values summing to 1, got {ratios}"
            )
        warmup = int(total_steps * ratios[0])
        hold = int(total_steps * ratios[1])
        return cls(
            warmup_steps=warmup,
            hold_steps=hold,
            decay_steps=max(total_steps - warmup - hold, 0),
            init_scale=init_scale,
            final_scale=final_scale,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.init_scale + (1.0 - self.init_scale) * step / self.warmup_steps
        step -= self.warmup_steps
        if step < self.hold_steps:
            return 1.0
        step -= self.hold_steps
        if step < self.decay_steps:
            return math.exp(math.log(self.final_scale) * step / self.decay_steps)
        return self.final_scale


@dataclass(frozen=True, kw_only=True)
class CosineSchedule:
    """Linear warmup to the peak, then half-cosine decay to ``min_scale`` at ``total_steps``."""

    warmup_steps: int
    """Updates of linear warmup (0 for none)."""
    total_steps: int
    """Update at which the decay reaches ``min_scale`` (kept afterwards)."""
    min_scale: float = 0.0
    """Final factor."""

    def __post_init__(self) -> None:
        _check_nonneg(warmup_steps=self.warmup_steps)
        if self.total_steps < self.warmup_steps:
            raise ValueError(
                f"total_steps ({self.total_steps}) must be >= warmup_steps ({self.warmup_steps})"
            )
        if not 0.0 <= self.min_scale <= 1.0:
            raise ValueError(f"min_scale must be in [0, 1], got {self.min_scale}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_scale + (1.0 - self.min_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True, kw_only=True)
class ConstantSchedule:
    """Optional linear warmup, then the peak rate forever."""

    warmup_steps: int = 0
    """Updates of linear warmup (0 for none)."""

    def __post_init__(self) -> None:
        _check_nonneg(warmup_steps=self.warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 1.0


class StepScheduler:
    """Sets ``lr = base_lr * schedule(step)`` on every param group of an optimizer.

    The base (peak) rate of each group is read once from ``group["initial_lr"]`` (set to
    the group's current ``lr`` when absent, as torch's schedulers do), so the scheduler can
    be rebuilt over a restored optimizer without compounding factors.

    Args:
        optimizer: the optimizer whose groups are driven.
        schedule: ``step -> factor`` callable, e.g. :class:`TriStageSchedule`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        factor = float(self.schedule(self.last_step))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        """Advance by one optimizer update and set the rate for the next one."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current learning rate of every param group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["step"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()


@dataclass(kw_only=True)
class SchedulerConfig:
    """Which learning-rate schedule to use and its lengths (in optimizer updates)."""

    kind: str = "tri_stage"
    """One of ``"noam"``, ``"tri_stage"``, ``"cosine"``, ``"constant"``."""
    warmup_steps: int = 1000
    """Warmup updates (all kinds)."""
    hold_steps: int = 0
    """Tri-stage: updates held at the peak."""
    decay_steps: int = 0
    """Tri-stage: updates of exponential decay."""
    total_steps: int = 0
    """Cosine: update at which the decay ends; tri-stage: used with ``phase_ratios``."""
    phase_ratios: tuple[float, float, float] | None = None
    """Tri-stage: (warmup, hold, decay) fractions of ``total_steps``; overrides the step counts."""
    init_scale: float = 0.01
    """Tri-stage: factor at step 0."""
    final_scale: float = 0.05
    """Tri-stage: factor at the end of the decay."""
    min_scale: float = 0.0
    """Cosine: final factor."""

    def validate(self) -> None:
        if self.kind not in ("noam", "tri_stage", "cosine", "constant"):
            raise ValueError(
                f"scheduler kind must be noam|tri_stage|cosine|constant, got {self.kind!r}"
            )
        make_schedule(self)  # the schedules check their own arguments


def make_schedule(config: SchedulerConfig) -> Callable[[int], float]:
    """The ``step -> factor`` callable described by ``config``."""
    if config.kind == "noam":
        return NoamSchedule(warmup_steps=config.warmup_steps)
    if config.kind == "tri_stage":
        if config.phase_ratios is not None:
            return TriStageSchedule.from_ratios(
                config.total_steps,
                tuple(config.phase_ratios),
                init_scale=config.init_scale,
                final_scale=config.final_scale,
            )
        return TriStageSchedule(
            warmup_steps=config.warmup_steps,
            hold_steps=config.hold_steps,
            decay_steps=config.decay_steps,
            init_scale=config.init_scale,
            final_scale=config.final_scale,
        )
    if config.kind == "cosine":
        return CosineSchedule(
            warmup_steps=config.warmup_steps,
            total_steps=config.total_steps,
            min_scale=config.min_scale,
        )
    if config.kind == "constant":
        return ConstantSchedule(warmup_steps=config.warmup_steps)
    raise ValueError(f"scheduler kind must be noam|tri_stage|cosine|constant, got {config.kind!r}")


def create_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig) -> StepScheduler:
    """A :class:`StepScheduler` driving ``optimizer`` with the schedule of ``config``."""
    config.validate()
    return StepScheduler(optimizer, make_schedule(config))
