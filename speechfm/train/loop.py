"""The training step and epoch as functions: accumulation, clipping, AMP, non-finite skipping.

The contract with a recipe is one function, ``loss_fn(model, batch)``, returning

* ``(loss_sum, count)`` or ``(loss_sum, count, stats)`` where ``loss_sum`` is a scalar
  tensor: the loss *summed* over the ``count`` items (utterances, frames or tokens) of the
  batch, and ``stats`` an optional dict of further per-batch sums to log (same keys on
  every rank).

Because losses are sums, :func:`train_step` can normalise exactly once, by the total count
over all micro-batches and all ranks: gradient accumulation over K micro-batches and
data parallelism over R ranks both give the very update of one big batch (up to float
rounding) even when batches have different sizes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from speechfm.train.distributed import all_reduce_sum, get_world_size, grads_are_averaged, is_fsdp

__all__ = [
    "EpochSummary",
    "StepResult",
    "TrainState",
    "amp_autocast",
    "create_grad_scaler",
    "evaluate",
    "resolve_amp_dtype",
    "train_one_epoch",
    "train_step",
]

LossFn = Callable[[nn.Module, Any], Sequence[Any]]


@dataclass(kw_only=True)
class TrainState:
    """Counters of a run, saved in every checkpoint."""

    step: int = 0
    """Optimizer updates taken (skipped ones excluded)."""
    epoch: int = 0
    """Epochs completed; the epoch being trained is ``epoch`` (0-based)."""
    batch_in_epoch: int = 0
    """Batches consumed in the current epoch."""
    items_seen: float = 0.0
    """Total normaliser ``count`` over all updates (utterances/frames/tokens, all ranks)."""
    nonfinite_loss_steps: int = 0
    """Updates skipped because a loss was NaN/Inf (on any rank)."""
    nonfinite_grad_steps: int = 0
    """Updates skipped because the gradient norm was NaN/Inf (incl. fp16 overflow)."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, type(getattr(self, f.name))(state[f.name]))

    @property
    def skipped_steps(self) -> int:
        """All skipped updates."""
        return self.nonfinite_loss_steps + self.nonfinite_grad_steps


@dataclass
class StepResult:
    """Outcome of one :func:`train_step`."""

    loss: float
    """Loss normalised by the global count (NaN when skipped for a non-finite loss)."""
    count: float
    """Global normaliser (sum of ``count`` over micro-batches and ranks)."""
    lr: float
    """Learning rate of the first param group used for this update."""
    grad_norm: float
    """Total gradient norm before clipping (NaN when not computed)."""
    skipped: bool = False
    """True when no update was applied."""
    reason: str | None = None
    """``"nonfinite_loss"``, ``"nonfinite_grad"`` or ``"empty"`` (zero count) when skipped."""
    stats: dict[str, float] = field(default_factory=dict)
    """Extra stats from ``loss_fn``, normalised by ``count``."""
    num_batches: int = 0
    """Micro-batches consumed by this step on this rank."""


# ------------------------------------------------------------------------------------ AMP


def resolve_amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """Map an ``--amp`` option to an autocast dtype (``None`` = full fp32).

    ``"auto"`` gives bf16 on a CUDA device that supports it and fp32 otherwise (CPU
    autocast is slower than fp32 for training); ``"bf16"`` and ``"fp16"`` force the type
    (fp16 only on CUDA, with :func:`create_grad_scaler`); ``"fp32"``/``"none"`` disable AMP.
    """
    device = torch.device(device)
    amp = amp.lower()
    if amp in ("fp32", "none", "no", "off"):
        return None
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16", "half"):
        if device.type != "cuda":
            raise ValueError(f"fp16 AMP needs a CUDA device, got {device}")
        return torch.float16
    raise ValueError(f"amp must be auto|bf16|fp16|fp32, got {amp!r}")


def amp_autocast(
    device: torch.device | str, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def create_grad_scaler(dtype: torch.dtype | None, device: torch.device | str) -> Any:
    """A ``torch.amp.GradScaler`` for fp16 on CUDA; ``None`` otherwise (bf16/fp32 need none)."""
    if dtype == torch.float16 and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


# ----------------------------------------------------------------------------------- step


def _unpack(out: Any) -> tuple[torch.Tensor, torch.Tensor | float, Mapping[str, Any]]:
    if isinstance(out, torch.Tensor) or not isinstance(out, Sequence) or len(out) not in (2, 3):
        raise TypeError(
            "loss_fn must return (loss_sum, count) or (loss_sum, count, stats), got "
            f"{type(out).__name__}"
        )
    loss, count = out[0], out[1]
    stats = out[2] if len(out) == 3 else {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn's loss_sum must be a scalar tensor")
    return loss, count, stats


@contextlib.contextmanager
def _gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the cross-rank gradient reduction on all but the last micro-batch."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
    else:
        if is_fsdp(model):
            model.set_requires_gradient_sync(sync)
        yield


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _as_float(value: torch.Tensor) -> float:
    if hasattr(value, "full_tensor"):  # DTensor norm under FSDP
        value = value.full_tensor()
    return float(value)


def train_step(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    state: TrainState | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    amp_dtype: torch.dtype | None = None,
    max_grad_norm: float | None = None,
    model_avg: Any = None,
) -> StepResult:
    """One optimizer update from ``len(batches)`` accumulated micro-batches.

    Gradients are normalised by the count summed over micro-batches and ranks (so the
    update equals that of one big batch), clipped to ``max_grad_norm``, and applied. The
    update is skipped - parameters, optimizer state and scheduler untouched, the matching
    counter of ``state`` incremented - when any loss (on any rank) or the gradient norm is
    NaN/Inf. All ranks take the same decision, so none waits on a collective.

    Args:
        model: the model, plain or wrapped by :func:`speechfm.train.distributed.wrap_model`.
        batches: the micro-batches of this update (``accum_grad`` of them).
        loss_fn: ``loss_fn(model, batch) -> (loss_sum, count[, stats])`` (see module doc).
        optimizer: the optimizer over the model's parameters.
        state: counters to advance (``step``, skip counters, ``items_seen``).
        scheduler: stepped after each applied update.
        scaler: fp16 ``GradScaler`` from :func:`create_grad_scaler`, or None.
        amp_dtype: autocast dtype for the forward pass (None = fp32).
        max_grad_norm: clip the total gradient 2-norm to this (None = no clipping).
        model_avg: a ``ModelAverager`` updated after each applied update.

    Returns:
        A :class:`StepResult`.
    """
    if len(batches) == 0:
        raise ValueError("train_step needs at least one micro-batch")
    params = _params(optimizer)
    device = params[0].device
    world = get_world_size()
    distributed = world > 1
    lr = float(optimizer.param_groups[0]["lr"])

    optimizer.zero_grad(set_to_none=True)
    loss_total = torch.zeros((), dtype=torch.float64, device=device)
    count_total = torch.zeros((), dtype=torch.float64, device=device)
    stat_totals: dict[str, torch.Tensor] = {}
    bad = False
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        with _gradient_sync(model, sync=last):
            with amp_autocast(device, amp_dtype):
                loss, count, stats = _unpack(loss_fn(model, batch))
            finite = bool(torch.isfinite(loss.detach()).all())
            bad = bad or not finite
            # A lone process can skip the useless backward; ranks of a group must all run
            # it, since the gradient all-reduce is a collective (NaNs then poison all
            # grads alike and every rank skips).
            if finite or distributed:
                (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_total += loss.detach().to(torch.float64).reshape(())
        count_total += torch.as_tensor(count, dtype=torch.float64, device=device).reshape(())
        for key, value in stats.items():
            value = torch.as_tensor(value, dtype=torch.float64, device=device).detach().reshape(())
            stat_totals[key] = stat_totals.get(key, torch.zeros_like(value)) + value
        if bad and not distributed:
            break  # the step is lost anyway
    keys = sorted(stat_totals)
    reduced = torch.stack(
        [loss_total, count_total, torch.tensor(float(bad), dtype=torch.float64, device=device)]
        + [stat_totals[k] for k in keys]
    )
    all_reduce_sum(reduced)
    loss_sum, count, any_bad = (float(x) for x in reduced[:3].tolist())
    stats_out = {
        k: float(v) / count if count > 0 else math.nan
        for k, v in zip(keys, reduced[3:].tolist(), strict=True)
    }
    num_batches = index + 1

    if any_bad > 0 or not count > 0:
        # count == 0 (every item filtered out) leaves nothing to normalise by.
        optimizer.zero_grad(set_to_none=True)
        reason = "nonfinite_loss" if any_bad > 0 else "empty"
        if state is not None and any_bad > 0:
            state.nonfinite_loss_steps += 1
        return StepResult(
            loss=math.nan,
            count=count,
            lr=lr,
            grad_norm=math.nan,
            skipped=True,
            reason=reason,
            stats=stats_out,
            num_batches=num_batches,
        )

    if scaler is not None:
        scaler.unscale_(optimizer)
    grads = [p.grad for p in params if p.grad is not None]
    if distributed and not grads_are_averaged(model):
        # A model not wrapped by DDP/FSDP: sum the gradients here.
        for grad in grads:
            all_reduce_sum(grad)
        factor = 1.0 / count
    else:
        # DDP/FSDP average over ranks; undo that and divide by the global count.
        factor = (world if distributed else 1) / count
    if grads:
        torch._foreach_mul_(grads, factor)
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=None)
    elif grads:
        norm = torch.nn.utils.get_total_norm(grads)
    else:
        norm = torch.zeros(())
    grad_norm = _as_float(norm)

    if not math.isfinite(grad_norm):
        if scaler is not None:
            # Let the scaler see the overflow (it skips the step) and lower its scale.
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if state is not None:
            state.nonfinite_grad_steps += 1
        return StepResult(
            loss=loss_sum / count,
            count=count,
            lr=lr,
            grad_norm=grad_norm,
            skipped=True,
            reason="nonfinite_grad",
            stats=stats_out,
            num_batches=num_batches,
        )

    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if state is not None:
        state.step += 1
        state.items_seen += count
    if scheduler is not None:
        scheduler.step()
    if model_avg is not None and state is not None:
        model_avg.update(model, state.step)
    return StepResult(
        loss=loss_sum / count,
        count=count,
        lr=lr,
        grad_norm=grad_norm,
        stats=stats_out,
        num_batches=num_batches,
    )


# ---------------------------------------------------------------------------------- epoch


@dataclass
class EpochSummary:
    """What :func:`train_one_epoch` did."""

    loss: float
    """Count-weighted mean loss over the applied updates of this call."""
    steps: int
    """Updates applied."""
    skipped: int
    """Updates skipped (non-finite loss or gradient)."""
    batches: int
    """Batches consumed by this call."""
    seconds: float
    """Wall-clock duration."""
    completed: bool
    """True when the data ran out (the epoch ended); False when stopped early."""


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    state: TrainState,
    accum_grad: int = 1,
    scheduler: Any = None,
    scaler: Any = None,
    amp_dtype: torch.dtype | None = None,
    max_grad_norm: float | None = None,
    model_avg: Any = None,
    logger: Any = None,
    batch_size_fn: Callable[[Any], int] | None = None,
    on_step: Callable[[StepResult, TrainState], bool | None] | None = None,
) -> EpochSummary:
    """Run :func:`train_step` over ``batches`` in groups of ``accum_grad``.

    ``state.batch_in_epoch`` counts consumed batches; when the data runs out
    ``state.epoch`` is incremented and ``batch_in_epoch`` reset, so a checkpoint written
    afterwards resumes at the next epoch. A final group shorter than ``accum_grad`` still
    makes an update (its normalisation is by count, so it is not over-weighted).

    Args:
        model, loss_fn, optimizer, scheduler, scaler, amp_dtype, max_grad_norm, model_avg:
            as for :func:`train_step`.
        batches: this epoch's batches, e.g. ``sampler.track(loader)`` when resuming from a
            :class:`~speechfm.train.checkpoint.ResumableSampler`.
        state: the run's counters.
        accum_grad: micro-batches per update.
        logger: a :class:`~speechfm.train.logging.TrainLogger` (``log_step``) or None.
        batch_size_fn: items in a batch for the utterances/s display (e.g. ``len``).
        on_step: called after every step with ``(result, state)``; checkpoint or validate
            there. Returning True stops the epoch early (``completed=False``).
    """
    if accum_grad < 1:
        raise ValueError(f"accum_grad must be >= 1, got {accum_grad}")
    start = time.perf_counter()
    loss_sum = 0.0
    count_sum = 0.0
    steps = skipped = consumed = 0
    group: list[Any] = []
    items = 0

    def _step() -> bool:
        nonlocal loss_sum, count_sum, steps, skipped, items
        result = train_step(
            model,
            group,
            loss_fn,
            optimizer,
            state=state,
            scheduler=scheduler,
            scaler=scaler,
            amp_dtype=amp_dtype,
            max_grad_norm=max_grad_norm,
            model_avg=model_avg,
        )
        if result.skipped:
            skipped += 1
        else:
            steps += 1
            loss_sum += result.loss * result.count
            count_sum += result.count
        if logger is not None:
            logger.log_step(state, result, num_items=items)
        items = 0
        group.clear()
        return bool(on_step(result, state)) if on_step is not None else False

    for batch in batches:
        group.append(batch)
        consumed += 1
        state.batch_in_epoch += 1
        if batch_size_fn is not None:
            items += int(batch_size_fn(batch))
        if len(group) == accum_grad and _step():
            return EpochSummary(
                loss=loss_sum / count_sum if count_sum else math.nan,
                steps=steps,
                skipped=skipped,
                batches=consumed,
                seconds=time.perf_counter() - start,
                completed=False,
            )
    if group:
        _step()  # the epoch ends here whatever on_step answers
    state.epoch += 1
    state.batch_in_epoch = 0
    return EpochSummary(
        loss=loss_sum / count_sum if count_sum else math.nan,
        steps=steps,
        skipped=skipped,
        batches=consumed,
        seconds=time.perf_counter() - start,
        completed=True,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Count-weighted mean loss (and stats) over ``batches``, reduced over ranks.

    The model is put in eval mode for the pass and restored to its previous mode.

    Returns:
        ``{"loss": mean, "count": total, **mean_stats}``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, torch.Tensor] = {}
    try:
        for batch in batches:
            with amp_autocast(device, amp_dtype):
                loss, count, stats = _unpack(loss_fn(model, batch))
            values = {"loss": loss, "count": count, **stats}
            for key, value in values.items():
                value = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(())
                totals[key] = totals.get(key, torch.zeros_like(value)) + value
    finally:
        model.train(was_training)
    if not totals:
        return {"loss": math.nan, "count": 0.0}
    keys = sorted(totals)
    reduced = all_reduce_sum(torch.stack([totals[k] for k in keys])).tolist()
    sums = dict(zip(keys, reduced, strict=True))
    count = sums.pop("count")
    out = {k: v / count if count > 0 else math.nan for k, v in sums.items()}
    out["count"] = count
    return out
