"""Seeding and capture/restore of every random number generator a training run uses.

Exact resumption needs the Python, NumPy, torch CPU and CUDA generators back in the state
they had when the checkpoint was written. Their native state objects are tuples of Python
ints (``random``) or NumPy arrays (``numpy``), which ``torch.load(weights_only=True)``
refuses; :func:`get_rng_state` therefore converts them to tensors and primitives, and
:func:`set_rng_state` converts them back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "seed_everything", "set_rng_state"]


def seed_everything(seed: int, *, rank: int = 0) -> int:
    """Seed ``random``, NumPy and torch (all devices) with ``seed + rank``.

    Args:
        seed: base seed of the run.
        rank: process rank; offsetting by it gives each data-parallel worker its own
            dropout/augmentation stream while the run stays reproducible.

    Returns:
        The seed actually used.
    """
    value = int(seed) + int(rank)
    random.seed(value)
    # NumPy's legacy global seeder only takes 32-bit values.
    np.random.seed(value % (2**32))
    torch.manual_seed(value)  # also seeds every CUDA device
    return value


def get_rng_state() -> dict[str, Any]:
    """The state of every global generator as tensors and primitives (``weights_only``-safe).

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor, ...]}``;
        ``"cuda"`` is an empty list when CUDA is not initialised, so capturing never
        initialises a device as a side effect.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda_states: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {
            "version": int(version),
            # Mersenne Twister words are < 2**32, so int64 holds them exactly.
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda_states,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a dictionary made by :func:`get_rng_state`.

    CUDA states are restored only when CUDA is available; a checkpoint written on a GPU
    machine can therefore still resume (non-bit-exactly for CUDA ops) on a CPU one.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        count = min(len(cuda_states), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(cuda_states[index].cpu(), device=index)
