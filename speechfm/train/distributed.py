"""torchrun-launched data parallelism: process-group setup, DDP / FSDP2 wrapping, rank helpers.

Launch a recipe with ``torchrun --nproc-per-node G recipe/train.py ...``; torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which
:func:`init_distributed` reads. Without them (a plain ``python train.py``) everything
here degrades to single-process no-ops, so a recipe has one code path.

Only rank 0 logs and writes checkpoints (:attr:`DistInfo.is_main`), but checkpoint saving
of an FSDP model gathers shards and must be *called* on every rank.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "grads_are_averaged",
    "init_distributed",
    "is_fsdp",
    "is_main_process",
    "unwrap_model",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank (0 .. world_size - 1)."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node; selects the GPU."""
    device: torch.device = torch.device("cpu")
    """Device this process computes on."""
    backend: str | None = None
    """``"nccl"``/``"gloo"`` when a process group was initialised, else ``None``."""

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group with more than one rank is in use."""
        return self.world_size > 1


def init_distributed(
    *, backend: str | None = None, device: str | None = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default nccl when CUDA is available, else gloo.
        device: force ``"cpu"`` or ``"cuda"``; default CUDA when available.
        timeout_s: collective timeout in seconds.

    Returns:
        The :class:`DistInfo` of this process. With ``WORLD_SIZE`` unset or 1 no process
        group is created and rank 0 of 1 is returned.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size <= 1:
        return DistInfo(device=dev)
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if backend == "nccl":
            # Binding the device lets NCCL set up its communicator eagerly.
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistInfo(
        rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend
    )


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists (call at the end of a recipe)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank, 0 without a process group."""
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks; a no-op without a process group."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op single-process) and return it."""
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def is_fsdp(model: nn.Module) -> bool:
    """True when ``model`` was sharded with ``torch.distributed.fsdp.fully_shard``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch < 2.6
        return False
    return isinstance(model, FSDPModule)


def grads_are_averaged(model: nn.Module) -> bool:
    """True when backward averages gradients over ranks (DDP or FSDP wrapping)."""
    return isinstance(model, nn.parallel.DistributedDataParallel) or is_fsdp(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards in place, so it is returned as is)."""
    while isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def wrap_model(
    model: nn.Module,
    info: DistInfo,
    *,
    strategy: str = "ddp",
    shard_modules: Iterable[type[nn.Module]] = (),
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap a model (already on ``info.device``) for data-parallel training.

    Args:
        model: the module to train.
        info: from :func:`init_distributed`; single-process runs get ``model`` back.
        strategy: ``"ddp"`` (replicated parameters, all-reduced gradients) or ``"fsdp"``
            (FSDP2 ``fully_shard``: parameters, gradients and optimizer state sharded; for
            models too large to replicate).
        shard_modules: FSDP only: submodule classes (e.g. the conformer block) sharded as
            their own units, so only one block's parameters are gathered at a time.
        param_dtype: FSDP only: dtype parameters are gathered in for compute (e.g. bf16).
        reduce_dtype: FSDP only: dtype gradients are reduce-scattered in.
        find_unused_parameters: DDP only: tolerate parameters that get no gradient.

    Returns:
        The wrapped model; use :func:`unwrap_model` to reach the original module.
    """
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy must be 'ddp' or 'fsdp', got {strategy!r}")
    if not info.is_distributed:
        return model
    if strategy == "ddp":
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    unit_types = tuple(shard_modules)
    if unit_types:
        for module in list(model.modules()):
            if module is not model and isinstance(module, unit_types):
                fully_shard(module, mp_policy=mp_policy)
    fully_shard(model, mp_policy=mp_policy)
    return model
