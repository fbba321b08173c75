"""Model averaging: mean of saved checkpoints and the running average ``model_avg``.

Two complementary tools, as in icefall:

* :func:`average_checkpoints` - the plain mean of the weights in the last N epoch/step
  checkpoints (``model.safetensors`` of each).
* :class:`ModelAverager` - a float64 running average of the weights, sampled every
  ``period`` updates during training. After update ``s`` (a multiple of ``period``) it
  holds the mean of the snapshots taken at ``period, 2 * period, ..., s``. Saved with
  every checkpoint, it lets :func:`average_between` recover the mean of *all* snapshots
  between two checkpoints without having saved each one:
  ``(avg_end * s_end - avg_start * s_start) / (s_end - s_start)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MODEL_AVG_FILE",
    "ModelAverager",
    "average_between",
    "average_checkpoints",
    "average_state_dicts",
]

MODEL_AVG_FILE = "model_avg.safetensors"


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point entries (accumulated in float64, cast back).

    Integer entries (e.g. BatchNorm's ``num_batches_tracked``) cannot be meaningfully
    averaged and are taken from the last state dict.

    Raises:
        ValueError: when the list is empty or the state dicts have different keys.
    """
    if not state_dicts:
        raise ValueError("average_state_dicts needs at least one state dict")
    keys = list(state_dicts[0].keys())
    for index, sd in enumerate(state_dicts[1:], start=1):
        if set(sd.keys()) != set(keys):
            missing = sorted(set(keys) ^ set(sd.keys()))[:5]
            raise ValueError(f"state dict #{index} has different keys from #0 (e.g. {missing})")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = state_dicts[0][key]
        if first.is_floating_point():
            total = torch.zeros_like(first, dtype=torch.float64)
            for sd in state_dicts:
                total += sd[key].to(torch.float64)
            out[key] = (total / len(state_dicts)).to(first.dtype)
        else:
            out[key] = state_dicts[-1][key].clone()
    return out


def average_checkpoints(
    checkpoints: Sequence[str | os.PathLike], *, filename: str = "model.safetensors"
) -> dict[str, torch.Tensor]:
    """Mean of the weights stored in ``<checkpoint>/<filename>`` for each checkpoint dir.

    The last N epochs of a run, for instance::

        average_checkpoints(list_checkpoints(root, prefix="epoch-")[-n:])

    Returns:
        A state dict ready for ``model.load_state_dict``.
    """
    from safetensors.torch import load_file

    paths = [Path(c) / filename for c in checkpoints]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no weights to average")
    return average_state_dicts([load_file(str(p)) for p in paths])


def average_between(
    start: str | os.PathLike, end: str | os.PathLike, *, filename: str = MODEL_AVG_FILE
) -> dict[str, torch.Tensor]:
    """Mean of the model snapshots taken after checkpoint ``start`` up to checkpoint ``end``.

    Uses the running averages stored in each checkpoint's ``model_avg.safetensors`` and the
    update counts recorded in their metadata (icefall's ``--use-averaged-model``).

    Returns:
        A float64 state dict (cast it to the model dtype when loading).
    """
    avg_start, step_start = _load_avg_file(Path(start) / filename)
    avg_end, step_end = _load_avg_file(Path(end) / filename)
    if step_end <= step_start:
        raise ValueError(
            f"{end} (model_avg at step {step_end}) must come after {start} (step {step_start})"
        )
    if set(avg_start) != set(avg_end):
        raise ValueError(f"{start} and {end} hold model averages of different models")
    out: dict[str, torch.Tensor] = {}
    for key, value in avg_end.items():
        if value.is_floating_point():
            out[key] = (value * step_end - avg_start[key] * step_start) / (step_end - step_start)
        else:
            out[key] = value.clone()
    return out


def _load_avg_file(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint has no running model average")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    if "step" not in meta:
        raise ValueError(f"{path}: metadata lacks the 'step' of the last averaging update")
    return tensors, int(meta["step"])


class ModelAverager:
    """Running average of a model's weights, updated every ``period`` optimizer updates.

    Kept in float64 (on CPU for ordinary tensors; FSDP-sharded DTensors stay on their
    device mesh) so that thousands of tiny increments do not lose precision.

    Args:
        model: the model being trained (wrapped or not).
        period: averaging period in optimizer updates.
    """

    def __init__(self, model: nn.Module, *, period: int = 200) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = int(period)
        self.step = 0
        self.averaged = {k: _avg_copy(v) for k, v in _model_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Fold the current weights in if ``step`` is a multiple of ``period``.

        Args:
            model: the trained model.
            step: number of optimizer updates taken so far (``TrainState.step``).

        Returns:
            True when an update happened.
        """
        if step <= 0 or step % self.period != 0 or step == self.step:
            return False
        weight = self.period / step
        for key, value in _model_state(model).items():
            avg = self.averaged[key]
            if avg.is_floating_point():
                avg.mul_(1.0 - weight).add_(
                    value.detach().to(avg.device, torch.float64), alpha=weight
                )
            else:
                avg.copy_(value.detach().to(avg.device))
        self.step = int(step)
        return True

    def averaged_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The averaged weights; floating entries cast to ``dtype`` when given."""
        if dtype is None:
            return dict(self.averaged)
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.averaged.items()}

    def state_dict(self) -> dict[str, int]:
        """Scalar state (the tensors are saved separately, in ``model_avg.safetensors``)."""
        return {"period": self.period, "step": self.step}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.period = int(state["period"])
        self.step = int(state["step"])

    def load_averaged(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy saved averaged weights (full tensors) back in."""
        missing = set(self.averaged) - set(tensors)
        if missing:
            raise KeyError(f"saved model average lacks {sorted(missing)[:5]}")
        for key, avg in self.averaged.items():
            src = tensors[key]
            if hasattr(avg, "device_mesh"):
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(
                    src.to(avg.device_mesh.device_type, avg.dtype), avg.device_mesh, avg.placements
                )
                avg.copy_(src)
            else:
                avg.copy_(src.to(avg.dtype))


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from speechfm.train.distributed import unwrap_model

    return unwrap_model(model).state_dict()


def _avg_copy(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    if hasattr(value, "device_mesh"):  # DTensor: keep sharded where it lives
        # .to() returns the very same object when the dtype already matches; clone so
        # the average never aliases the live parameter.
        return value.to(torch.float64).clone() if value.is_floating_point() else value.clone()
    value = value.to("cpu")
    return value.to(torch.float64, copy=True) if value.is_floating_point() else value.clone()
