"""Checkpoint directories: atomic save, resume from the latest complete one, exact sampler state.

Layout of ``<root>/<name>/`` (e.g. ``exp/checkpoints/step-000400``)::

    model.safetensors      weights (full, unsharded, CPU)
    config.json            the JSON the caller passes: model config, tokenizer, features
    tokenizer/             written by the tokenizer's ``save(dir)`` (optional)
    model_avg.safetensors  running float64 average (optional, see speechfm.train.average)
    training_state.pt      optimizer, scheduler, sampler, grad scaler, counters, RNG states
    meta.json              name, step, epoch, creation time (written last)

and ``<root>/latest`` holds the name of the newest complete checkpoint.

Atomicity: everything is written to ``<root>/.tmp-<name>-<pid>/``, fsync'ed, then the
directory is renamed into place (``os.rename`` is atomic within a filesystem) and only then
is ``latest`` replaced (write to a temp file + ``os.replace``). A process killed at any
point leaves either the previous ``latest`` or the new one, both complete; leftover
``.tmp-*`` directories are ignored by :func:`find_latest_checkpoint` and removed by the
next save. Overwriting a name (``best``) first moves the old copy to ``<name>.old-<pid>``,
which stays a complete checkpoint until the new one is in place.

``training_state.pt`` holds only tensors and primitive containers, so it is read with
``torch.load(weights_only=True)``; RNG states are converted by :mod:`speechfm.train.rng`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.train.average import MODEL_AVG_FILE, ModelAverager
from speechfm.train.distributed import get_rank, get_world_size, is_fsdp, unwrap_model
from speechfm.train.rng import get_rng_state, set_rng_state

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "ResumableSampler",
    "checkpoint_name",
    "find_latest_checkpoint",
    "is_complete_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_model_weights",
    "save_checkpoint",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
LATEST_FILE = "latest"
_FORMAT_VERSION = 1
_BACKUP_TAG = ".old-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ResumableSampler:
    """Wrap a stateful batch sampler so its saved state matches the batches *consumed*.

    A ``DataLoader`` iterates its sampler ahead of the training loop (prefetching, worker
    queues), so ``sampler.state_dict()`` at checkpoint time would skip the prefetched
    batches on resume. This wrapper snapshots the sampler state after each batch it hands
    out and releases the snapshot only when the loop reports the batch as consumed by
    iterating through :meth:`track`::

        sampler = ResumableSampler(make_sampler(cuts, max_duration=200, seed=0))
        loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2)
        for batch in sampler.track(loader):
            ...

    Without :meth:`track` (iterating the sampler directly, nothing prefetched) the wrapped
    sampler's own state is returned. Other attributes (``set_epoch`` ...) are forwarded.
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self._pending: deque[dict[str, Any]] = deque()
        self._consumed: dict[str, Any] | None = None
        self._tracking = False

    def __getattr__(self, name: str) -> Any:
        if name == "sampler":  # not yet set (e.g. during unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.sampler)
        self._pending.clear()
        # State at the start of the epoch (after the sampler's own reset in __iter__).
        self._consumed = copy.deepcopy(self.sampler.state_dict())
        for batch in iterator:
            self._pending.append(copy.deepcopy(self.sampler.state_dict()))
            yield batch

    def track(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield from ``batches`` (the DataLoader), marking each batch consumed as it goes."""
        self._tracking = True
        for batch in batches:
            if self._pending:
                self._consumed = self._pending.popleft()
            yield batch

    def state_dict(self) -> dict[str, Any]:
        if self._tracking and self._consumed is not None:
            return copy.deepcopy(self._consumed)
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # lhotse samplers pop keys from the dict they are given.
        self.sampler.load_state_dict(copy.deepcopy(dict(state)))
        self._pending.clear()
        self._consumed = None


def checkpoint_name(*, step: int | None = None, epoch: int | None = None) -> str:
    """``"step-000400"`` for a mid-epoch checkpoint, ``"epoch-3"`` for an end-of-epoch one."""
    if (step is None) == (epoch is None):
        raise ValueError("give exactly one of step= or epoch=")
    return f"step-{step:06d}" if step is not None else f"epoch-{epoch}"


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a checkpoint directory with all required files."""
    path = Path(path)
    return all((path / f).is_file() for f in (MODEL_FILE, CONFIG_FILE, STATE_FILE, META_FILE))


def _read_meta(path: Path) -> dict[str, Any]:
    with open(path / META_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def list_checkpoints(root: str | os.PathLike, *, prefix: str | None = None) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (by step, then creation time).

    Args:
        root: the checkpoint root directory.
        prefix: keep only names starting with it (e.g. ``"epoch-"``).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[tuple[int, float, Path]] = []
    for child in root.iterdir():
        if child.name.startswith(".") or not child.is_dir():
            continue
        if prefix is not None and not child.name.startswith(prefix):
            continue
        if not is_complete_checkpoint(child):
            continue
        try:
            meta = _read_meta(child)
        except (OSError, ValueError):
            continue
        found.append((int(meta.get("step", -1)), float(meta.get("time", 0.0)), child))
    found.sort(key=lambda x: (x[0], x[1]))
    return [p for _, _, p in found]


def find_latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root`` (for ``--resume``), or None.

    Follows ``<root>/latest``; if it is missing or names an incomplete directory (a crash
    in between two renames), falls back to the complete checkpoint with the most steps.
    """
    root = Path(root)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and is_complete_checkpoint(root / name):
            return root / name
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory."""
    with open(Path(path) / CONFIG_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def load_model_weights(path: str | os.PathLike, model: nn.Module, *, strict: bool = True) -> None:
    """Load ``model.safetensors`` of checkpoint ``path`` into ``model`` (plain, DDP or FSDP)."""
    from safetensors.torch import load_file

    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: checkpoint has no model weights")
    state = load_file(str(file), device="cpu")
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(
            model, state, options=StateDictOptions(full_state_dict=True, strict=strict)
        )
    else:
        unwrap_model(model).load_state_dict(state, strict=strict)


# --------------------------------------------------------------------------------- saving


def _full_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unsharded, contiguous CPU copies that never share storage (safetensors refuses that)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in state.items():
        value = value.detach()
        if hasattr(value, "full_tensor"):  # DTensor: a collective, run on every rank
            value = value.full_tensor()
        value = value.to("cpu").contiguous()
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        if (
            ident in seen
            or value.untyped_storage().nbytes() != value.numel() * value.element_size()
        ):
            # Tied weights or views of a larger storage: store a private copy.
            value = value.clone()
        seen.add((value.untyped_storage().data_ptr(), value.storage_offset()))
        out[key] = value
    return out


def _model_and_optim_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        # Gathered to rank 0 on CPU; other ranks get empty dicts.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=options)
        optim_state = (
            get_optimizer_state_dict(model, optimizer, options=options) if optimizer else None
        )
        return model_state, optim_state
    model_state = unwrap_model(model).state_dict()
    optim_state = _optim_state_by_name(model, optimizer) if optimizer is not None else None
    return model_state, optim_state


def _param_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, param in unwrap_model(model).named_parameters(remove_duplicate=False):
        names.setdefault(id(param), name)  # tied parameters: the first name
    return names


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _optim_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` keyed by parameter names instead of positions.

    This is the format of torch's distributed ``get_optimizer_state_dict`` (used for
    FSDP), so a run can resume under another strategy (FSDP <-> DDP <-> one process), and
    a reordered parameter list is caught instead of silently mixing moments.
    """
    names = _param_names(model)
    index_to_name: dict[int, str] = {}
    for index, param in enumerate(_optimizer_params(optimizer)):
        if id(param) not in names:
            raise ValueError(f"optimizer parameter #{index} is not a parameter of the model")
        index_to_name[index] = names[id(param)]
    raw = optimizer.state_dict()
    return {
        "state": {index_to_name[i]: value for i, value in raw["state"].items()},
        "param_groups": [
            {**group, "params": [index_to_name[i] for i in group["params"]]}
            for group in raw["param_groups"]
        ],
    }


def _load_optim_state_by_name(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], source: Path
) -> None:
    names = _param_names(model)
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        raise ValueError(
            f"{source}: saved optimizer has {len(saved['param_groups'])} param groups, "
            f"this one {len(groups)}"
        )
    state: dict[int, Any] = {}
    new_groups = []
    index = 0
    for number, (saved_group, group) in enumerate(zip(saved["param_groups"], groups, strict=True)):
        current = [names[id(p)] for p in group["params"]]
        if set(current) != set(saved_group["params"]):
            diff = sorted(set(current) ^ set(saved_group["params"]))[:5]
            raise ValueError(f"{source}: param group {number} differs from the saved one: {diff}")
        ids = list(range(index, index + len(current)))
        for i, name in zip(ids, current, strict=True):
            if name in saved["state"]:
                state[i] = saved["state"][name]
        new_groups.append({**saved_group, "params": ids})
        index += len(current)
    optimizer.load_state_dict({"state": state, "param_groups": new_groups})


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _save_tokenizer(tokenizer: Any, directory: Path) -> None:
    directory.mkdir()
    if hasattr(tokenizer, "save"):
        tokenizer.save(directory)
    elif callable(tokenizer):
        tokenizer(directory)
    else:
        raise TypeError(
            f"tokenizer must have a save(dir) method or be a callable(dir), got {type(tokenizer)}"
        )


def _gather_rng() -> list[dict[str, Any]] | None:
    """RNG states of every rank, on rank 0 (None elsewhere)."""
    state = get_rng_state()
    world = get_world_size()
    if world == 1:
        return [state]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * world if get_rank() == 0 else None
    dist.gather_object(state, gathered, dst=0)
    return gathered


def _delete_dir(root: Path, path: Path) -> None:
    # Rename first so a crash mid-delete never leaves a half-deleted "complete" dir.
    trash = root / f".trash-{path.name}-{os.getpid()}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    """Delete leftovers of interrupted saves (never a checkpoint that is the only copy)."""
    for child in root.iterdir():
        if child.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(child, ignore_errors=True)
        elif _BACKUP_TAG in child.name:
            base = root / child.name.split(_BACKUP_TAG, 1)[0]
            if is_complete_checkpoint(base):
                _delete_dir(root, child)


def _prune(root: Path, name: str, keep_last: int) -> None:
    prefix = name.rsplit("-", 1)[0] + "-" if "-" in name else name
    latest = (root / LATEST_FILE).read_text(encoding="utf-8").strip()
    candidates = [p for p in list_checkpoints(root, prefix=prefix) if p.name != latest]
    excess = len(candidates) - (keep_last - 1)
    for path in candidates[: max(excess, 0)]:
        _delete_dir(root, path)


def save_checkpoint(
    root: str | os.PathLike,
    name: str,
    *,
    model: nn.Module,
    config: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    sampler: Any = None,
    scaler: Any = None,
    state: Any = None,
    model_avg: ModelAverager | None = None,
    tokenizer: Any = None,
    extra: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    stateful: Mapping[str, Any] | None = None,
    write_files: Any = None,
) -> Path | None:
    """Atomically write checkpoint ``<root>/<name>`` and point ``<root>/latest`` at it.

    Call on *every* rank in distributed runs (FSDP shards and per-rank RNG states are
    gathered); only rank 0 writes.

    Args:
        root: checkpoint root directory (created if needed).
        name: directory name, e.g. from :func:`checkpoint_name`. An existing checkpoint of
            that name is replaced.
        model: the trained model (plain, DDP or FSDP2).
        config: JSON-serialisable dict saved as ``config.json`` (model config, tokenizer
            and feature settings): enough to rebuild the model without the recipe.
        optimizer, scheduler, sampler, scaler, state: objects with
            ``state_dict()``/``load_state_dict()`` (``state`` is the loop's ``TrainState``);
            their state dicts must hold only tensors and primitive containers.
        model_avg: running average saved to ``model_avg.safetensors``.
        tokenizer: object with ``save(dir)``, or a callable ``f(dir)``, writing ``tokenizer/``.
        extra: further primitive-valued training state (e.g. best validation loss).
        keep_last: keep at most this many checkpoints whose name shares the prefix of
            ``name`` (``step-`` or ``epoch-``), deleting the oldest.
        stateful: further objects with ``state_dict()``/``load_state_dict()`` by name
            (e.g. an EMA teacher's weights); tensors and primitive containers only.
        write_files: ``f(dir)`` writing further files into the checkpoint directory (the
            optional parts of a model directory), called on rank 0.

    Returns:
        The checkpoint directory on rank 0, None on other ranks.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid checkpoint name {name!r}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    # Capture RNG first: nothing below may perturb what training continues with.
    rng_states = _gather_rng()
    model_state, optim_state = _model_and_optim_state(model, optimizer)
    # Only rank 0 writes; FSDP already gathered above, so other ranks skip the copy.
    model_state = _full_cpu(model_state) if get_rank() == 0 else {}
    avg_tensors = _full_cpu(model_avg.averaged_state_dict()) if model_avg is not None else None
    rank = get_rank()
    if rank != 0:
        _barrier()
        return None

    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():  # left by an earlier crashed process that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state, str(tmp / MODEL_FILE), metadata={"format": "pt"})
    _fsync_file(tmp / MODEL_FILE)
    _write_json(tmp / CONFIG_FILE, dict(config) if config is not None else {})
    if tokenizer is not None:
        _save_tokenizer(tokenizer, tmp / TOKENIZER_DIR)
    if write_files is not None:
        write_files(tmp)
    if model_avg is not None:
        meta = {k: str(v) for k, v in model_avg.state_dict().items()}
        save_file(avg_tensors, str(tmp / MODEL_AVG_FILE), metadata=meta)
        _fsync_file(tmp / MODEL_AVG_FILE)
    training_state = {
        "format_version": _FORMAT_VERSION,
        "world_size": get_world_size(),
        "state": state.state_dict() if state is not None else None,
        "optimizer": optim_state,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "model_avg": model_avg.state_dict() if model_avg is not None else None,
        "rng": rng_states,
        "extra": dict(extra) if extra is not None else {},
        "stateful": {k: v.state_dict() for k, v in (stateful or {}).items()},
    }
    with open(tmp / STATE_FILE, "wb") as handle:
        torch.save(training_state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    counters = training_state["state"] or {}
    _write_json(
        tmp / META_FILE,
        {
            "name": name,
            "step": int(counters.get("step", -1)) if isinstance(counters, Mapping) else -1,
            "epoch": int(counters.get("epoch", -1)) if isinstance(counters, Mapping) else -1,
            "time": time.time(),
        },
    )
    _fsync_dir(tmp)

    final = root / name
    backup = None
    if final.exists():
        # Overwriting (e.g. "best"): the old copy stays a complete, visible checkpoint
        # under a backup name until the new one is in place, so a crash in between still
        # leaves something for find_latest_checkpoint to resume from.
        backup = root / f"{name}{_BACKUP_TAG}{os.getpid()}"
        os.rename(final, backup)
    os.rename(tmp, final)
    _fsync_dir(root)

    pointer_tmp = root / f".tmp-{LATEST_FILE}-{os.getpid()}"
    with open(pointer_tmp, "w", encoding="utf-8") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pointer_tmp, root / LATEST_FILE)
    _fsync_dir(root)
    if backup is not None:
        _delete_dir(root, backup)
    _remove_stale(root)

    if keep_last is not None:
        _prune(root, name, keep_last)
    _barrier()
    return final


def _barrier() -> None:
    from speechfm.train.distributed import barrier

    barrier()


# -------------------------------------------------------------------------------- loading


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    sampler: Any = None,
    scaler: Any = None,
    state: Any = None,
    model_avg: ModelAverager | None = None,
    stateful: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore whatever objects are given from checkpoint directory ``path``.

    Call on every rank; each reads the files (a shared filesystem is assumed) and takes
    its own RNG state when the world size is unchanged (rank 0's otherwise).

    Returns:
        The training-state dictionary (``"state"``, ``"extra"``, ... as saved).

    Raises:
        FileNotFoundError: when ``path`` is not a complete checkpoint.
        ValueError: when a requested part (e.g. optimizer state) was not saved.
    """
    path = Path(path)
    if not is_complete_checkpoint(path):
        raise FileNotFoundError(f"{path}: not a complete checkpoint directory")
    training_state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)

    def _require(key: str) -> Any:
        value = training_state.get(key)
        if value is None:
            raise ValueError(f"{path / STATE_FILE}: no saved {key} state to restore")
        return value

    if model is not None:
        load_model_weights(path, model, strict=strict)
    if optimizer is not None:
        if model is None:
            raise ValueError("restoring an optimizer needs the model (state is keyed by names)")
        optim_state = _require("optimizer")
        if is_fsdp(model):
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(
                model,
                optimizer,
                optim_state_dict=optim_state,
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            _load_optim_state_by_name(model, optimizer, optim_state, path)
    if scheduler is not None:
        scheduler.load_state_dict(_require("scheduler"))
    if sampler is not None:
        sampler.load_state_dict(_require("sampler"))
    if scaler is not None:
        scaler.load_state_dict(_require("grad_scaler"))
    if state is not None:
        state.load_state_dict(_require("state"))
    if model_avg is not None:
        from safetensors.torch import load_file

        model_avg.load_state_dict(_require("model_avg"))
        model_avg.load_averaged(load_file(str(path / MODEL_AVG_FILE), device="cpu"))
    for key, obj in (stateful or {}).items():
        saved = (training_state.get("stateful") or {}).get(key)
        if saved is None:
            raise ValueError(f"{path / STATE_FILE}: no saved {key!r} state to restore")
        obj.load_state_dict(saved)
    if restore_rng and training_state.get("rng"):
        states = training_state["rng"]
        rank = get_rank()
        same_world = training_state.get("world_size") == get_world_size()
        set_rng_state(states[rank] if same_world and rank < len(states) else states[0])
    return training_state
