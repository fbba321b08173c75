"""One generic run function for every recipe: :class:`RunConfig` + a model + a loss in,
a model directory out.

A recipe (``recipes/<method>/train.py``) builds its model, writes its loss and its
validation as plain functions and calls :func:`run`, which owns everything else:
distributed set-up (torchrun: DDP or FSDP2), the bucketing sampler, exact resume after a
kill, step / epoch / wall-clock budgets, gradient accumulation, AMP, clipping, periodic
validation, early stopping on the recipe's metric, checkpoint averaging and the running
model average, the choice of the exported weights by that metric (lower or higher is
better), the export through :mod:`speechfm.models.io`, TensorBoard scalars, curves.png,
tqdm and ``train_summary.json``. There is no base class to subclass.

**The batch** a recipe's ``loss_fn`` receives (from
:class:`~speechfm.data.dataset.AsrDataset`, or the recipe's own ``dataset`` giving the
same keys) is a dict::

    features         float32 (N, T, F)  fbank features, zero-padded (not normalised:
                                        the model's encoder normalises them)
    x_lens           int64 (N,)         valid frames per row
    cut_ids          list[str]          N cut ids (names for error messages)
    texts            list[str | None]   orthographic transcripts
    ipa              list[str | None] | None   IPA transcripts (custom["ipa"])
    langs, speakers  list[str | None]   language codes / speaker ids
    skipped_cut_ids  list[str]          cuts of this batch that could not be read (the
                                        run reports and counts them; N may be 0)

With ``volume_perturb_db`` the features already carry a random gain. The recipe adds
what its model needs (token ids as ``batch["targets"]``, masks, ...) and returns
``model(batch, ...)``: ``(loss summed over items, item count[, stats of sums])``.

**Outputs** under ``config.exp_dir``::

    checkpoints/step-NNNNNN/   resumable checkpoints (weights, optimizer, sampler, RNG, ...)
    final/                     the exported model directory
    train_summary.json         steps, time, hardware, data sizes, dev scores, averaging choice
    train_config.yaml          the resolved configuration of the run
    tensorboard/, curves.png, log/
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.errors import DataError
from speechfm.train.optim import OptimizerConfig
from speechfm.train.schedulers import SchedulerConfig

__all__ = ["HashedSpeedPerturb", "RunConfig", "RunContext", "RunResult", "load_cuts", "run",
           "seed_run"]

log = logging.getLogger("speechfm.train")

CKPT_DIR = "checkpoints"
FINAL_DIR = "final"
SUMMARY_FILE = "train_summary.json"
_AVERAGE = ("auto", "last", "checkpoints", "model_avg", "best")


@dataclass(kw_only=True)
class RunConfig:
    """The settings every recipe shares; a recipe's config subclasses it and adds its own."""

    # --- data -------------------------------------------------------------------------
    train_cuts: str
    """lhotse manifest of the training cuts (precomputed fbank used when present)."""
    dev_cuts: str | None = None
    """Manifest validated every ``valid_every`` updates; None = no validation."""
    min_utt_duration: float = 0.0
    """Training cuts shorter than this (seconds) are left out."""
    max_utt_duration: float = 30.0
    """Training cuts longer than this (seconds) are left out."""
    max_duration: float = 200.0
    """Seconds of audio per batch (per rank), before speed perturbation."""
    num_buckets: int = 10
    """Duration buckets of the bucketing sampler."""
    num_workers: int = 1
    """DataLoader worker processes (0 = load in the training process)."""
    speed_perturb: bool = False
    """Speed-perturb each training cut by a factor from ``speed_factors`` (features on the fly)."""
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    """Speed factors, drawn per cut and epoch from a hash of (seed, epoch, cut id)."""
    volume_perturb_db: float = 0.0
    """Random gain per training utterance, uniform in +-this many dB (0 = off); added to the
    log-mel features, which is what a gain does to fbank (recordings at other levels)."""
    # --- start ------------------------------------------------------------------------
    init_from: str | None = None
    """A model or checkpoint directory whose weights start the run: every parameter and
    buffer whose name starts with one of ``init_prefixes`` and whose shape matches is
    copied (e.g. a CTC model's encoder into a transducer, a pretrained encoder into a
    fine-tuned model). ``--resume`` restores its checkpoint over them."""
    init_prefixes: tuple[str, ...] = ("encoder.",)
    """Name prefixes of the weights ``init_from`` provides."""
    # --- fine-tuning ------------------------------------------------------------------
    freeze_prefixes: tuple[str, ...] = ()
    """Parameters whose names start with one of these never train (e.g.
    ``["encoder.conformer.front_end."]``: the front end frozen, as wav2vec 2.0 does)."""
    freeze_encoder_steps: int = 0
    """The first this many updates leave every ``encoder.*`` parameter unchanged, only the
    heads train (fairseq's ``freeze_finetune_updates``); see :func:`run`."""
    layer_lr_decay: float = 1.0
    """Layer-wise lr decay d in (0, 1]: heads (and ``encoder.conformer.final_norm``) get the
    lr, encoder block i (0 = first) of L gets lr * d**(L - i), the front end lr * d**(L + 1)."""
    # --- optimisation -----------------------------------------------------------------
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=1e-3, weight_decay=1e-3))
    """AdamW/Adam settings (peak lr, betas, weight decay)."""
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(kind="noam", warmup_steps=1000))
    """Learning-rate schedule; ``total_steps`` 0 is filled from the step budget."""
    max_steps: int | None = None
    """Stop after this many optimizer updates."""
    num_epochs: int | None = None
    """Stop after this many epochs."""
    max_minutes: float | None = None
    """Wall-clock training budget (all resumed runs together); stops with a checkpoint."""
    accum_grad: int = 1
    """Batches accumulated per optimizer update."""
    max_grad_norm: float | None = 5.0
    """Clip the gradient 2-norm to this (None = no clipping)."""
    amp: str = "auto"
    """Autocast: auto (bf16 on capable GPUs, fp32 on CPU), bf16, fp16 or fp32."""
    # --- run --------------------------------------------------------------------------
    exp_dir: str = "exp/run"
    """Output directory of the run."""
    seed: int = 42
    """Seed of weights, data order, SpecAugment, dropout and speed perturbation."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    num_threads: int = 0
    """torch intra-op threads per process on CPU (0 = usable cores / local processes)."""
    strategy: str = "ddp"
    """Data parallelism under torchrun: ddp or fsdp."""
    valid_every: int = 500
    """Validate on dev_cuts every this many updates (and at the end)."""
    early_stopping_patience: int | None = None
    """Stop when this many validations in a row did not improve the recipe's metric."""
    log_every: int = 10
    """TensorBoard scalars every this many updates."""
    save_every: int = 1000
    """Write a resumable checkpoint every this many updates (and at the end)."""
    keep_last: int = 5
    """Step checkpoints kept on disk."""
    average: str = "auto"
    """Exported weights: auto (best by the recipe's dev metric), last, checkpoints (mean of
    the last ``average_last``), model_avg (running average over the same span) or best (the
    kept step checkpoint with the best dev metric, no averaging: e.g. an adapter's best
    checkpoint)."""
    average_last: int = 3
    """Checkpoints averaged (``checkpoints``) / spanned (``model_avg``)."""
    average_period: int = 10
    """Updates between two samples of the running model average."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if not self.train_cuts:
            raise ValueError("train_cuts must be set")
        if not 0 <= self.min_utt_duration < self.max_utt_duration:
            raise ValueError(
                f"need 0 <= min_utt_duration < max_utt_duration, got {self.min_utt_duration} "
                f"and {self.max_utt_duration}")
        positive = {"max_duration": self.max_duration, "num_buckets": self.num_buckets,
                    "accum_grad": self.accum_grad, "valid_every": self.valid_every,
                    "log_every": self.log_every, "save_every": self.save_every,
                    "keep_last": self.keep_last, "average_last": self.average_last,
                    "average_period": self.average_period}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.volume_perturb_db < 0:
            raise ValueError(f"volume_perturb_db must be >= 0, got {self.volume_perturb_db}")
        if self.num_workers < 0 or self.num_threads < 0:
            raise ValueError("num_workers and num_threads must be >= 0")
        if self.init_from is not None and not self.init_prefixes:
            raise ValueError("init_from needs at least one name prefix in init_prefixes")
        if any(not prefix for prefix in self.freeze_prefixes):
            raise ValueError(
                f"freeze_prefixes must be non-empty names, got {list(self.freeze_prefixes)}")
        if self.freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps must be >= 0, got {self.freeze_encoder_steps}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if not self.speed_factors or any(f <= 0 for f in self.speed_factors):
            raise ValueError(f"speed_factors must be positive, got {list(self.speed_factors)}")
        if self.max_steps is None and self.num_epochs is None and self.max_minutes is None:
            raise ValueError("give a budget: max_steps, num_epochs and/or max_minutes")
        for name in ("max_steps", "num_epochs", "max_minutes", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 when set, got {value}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.amp not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"amp must be auto, bf16, fp16 or fp32, got {self.amp!r}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy must be ddp or fsdp, got {self.strategy!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.average not in _AVERAGE:
            raise ValueError(f"average must be one of {_AVERAGE}, got {self.average!r}")
        if self.average in ("model_avg", "auto") and self.keep_last < 2:
            raise ValueError("average model_avg/auto needs keep_last >= 2 (a start checkpoint)")
        self.optimizer.validate()
        needs_total = self.scheduler.kind == "cosine" or (
            self.scheduler.kind == "tri_stage" and self.scheduler.phase_ratios is not None)
        if needs_total and not self.scheduler.total_steps and self.max_steps is None:
            if self.num_epochs is None:
                raise ValueError(f"scheduler {self.scheduler.kind!r} needs a length: set "
                                 "max_steps, num_epochs or scheduler.total_steps")
        elif needs_total:
            dataclasses.replace(
                self.scheduler, total_steps=self.scheduler.total_steps or self.max_steps
            ).validate()
        else:
            self.scheduler.validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable), the recipe's own fields included."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)


@dataclass
class RunContext:
    """What a recipe's ``loss_fn`` and ``validate`` may read about the run in progress."""

    config: RunConfig
    info: Any
    """:class:`~speechfm.train.distributed.DistInfo` (rank, world size, device)."""
    state: Any
    """:class:`~speechfm.train.loop.TrainState` (``state.step``: updates so far)."""
    exp_dir: Path

    @property
    def device(self) -> torch.device:
        return self.info.device


@dataclass
class RunResult:
    """What :func:`run` returns."""

    final_dir: Path
    """The exported model directory."""
    summary: dict[str, Any]
    """The content of train_summary.json (rank 0; {} elsewhere)."""


class HashedSpeedPerturb:
    """Cut transform: speed-perturb by a factor chosen from a hash of (seed, epoch, cut id).

    Unlike a random stream, the choice does not depend on which worker loads the batch or
    on what came before, so resuming mid-epoch reproduces the very same batches.
    """

    def __init__(self, factors: Sequence[float], seed: int) -> None:
        self.factors = tuple(float(f) for f in factors)
        self.seed = int(seed)
        self.epoch = 0

    def factor(self, cut_id: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{cut_id}".encode(), digest_size=8)
        return self.factors[int.from_bytes(digest.digest(), "little") % len(self.factors)]

    def __call__(self, cuts):
        from lhotse import CutSet

        from speechfm.data.augment import perturb_speed

        return CutSet.from_cuts(perturb_speed(c, self.factor(c.id)) for c in cuts)


def load_cuts(path: str | os.PathLike):
    """A lhotse CutSet from a manifest file (lazily for JSONL).

    Raises:
        DataError: no such file.
    """
    from lhotse import CutSet

    if not Path(path).is_file():
        raise DataError(f"{path}: no such manifest")
    if str(path).endswith((".jsonl", ".jsonl.gz")):
        return CutSet.from_jsonl_lazy(path)
    return CutSet.from_file(path)


def seed_run(config: RunConfig) -> int:
    """Seed every generator for building the model: ``config.seed`` + this process' rank
    (torchrun's ``RANK``; the process group does not exist yet). Call it first."""
    from speechfm.train.rng import seed_everything

    return seed_everything(config.seed, rank=int(os.environ.get("RANK", "0")))


def _keep_duration(cut, low: float, high: float) -> bool:
    return low <= cut.duration <= high


def _worker_init(_: int) -> None:
    # The training process owns the cores; loaders only decode features.
    torch.set_num_threads(1)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _hardware(device: torch.device, threads: int, world: int) -> str:
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"CPU only: {_usable_cores()} cores ({cpu}), {world} process(es) x {threads} "
            f"torch threads, torch {torch.__version__}")


def _command_line() -> str:
    """How this process was started, as a user would type it."""
    import shlex

    prog = Path(sys.argv[0]).name
    if prog == "__main__.py":
        prog = "python -m speechfm"
    return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])


def _sizes(cuts) -> dict[str, float]:
    n, seconds = 0, 0.0
    for cut in cuts:
        n += 1
        seconds += cut.duration
    return {"utterances": n, "hours": round(seconds / 3600, 4)}


def _loss_curve(exp: Path) -> dict[str, list[list[float]]]:
    """Train/valid scalars by step from TensorBoard (a summary a test or report can read)."""
    from speechfm.train import read_scalars

    try:
        scalars = read_scalars(exp)
    except (FileNotFoundError, ValueError):
        return {}
    return {tag: [[s, v] for s, v in values] for tag, values in scalars.items()
            if tag == "train/loss" or tag.startswith("valid/")}


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


def _better(a: float, b: float | None, higher: bool) -> bool:
    if b is None or math.isnan(b):
        return not math.isnan(a)
    return a > b if higher else a < b


def run(
    config: RunConfig,
    *,
    model: nn.Module,
    model_config: Any,
    loss_fn: Callable[[nn.Module, dict, RunContext], Sequence[Any]],
    validate: Callable[[nn.Module, RunContext], Mapping[str, float]] | None = None,
    metric: str = "loss",
    higher_is_better: bool = False,
    parts: Mapping[str, Any] | None = None,
    dataset: Any = None,
    stateful: Mapping[str, Any] | None = None,
    find_unused_parameters: bool = False,
    summary: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> RunResult:
    """Train ``model`` as ``config`` says and export it; works as a plain process and under
    ``torchrun`` (one process per device).

    Args:
        config: the run's settings (validated here); a recipe's subclass is fine.
        model: the model with fresh weights (CMVN set); ``init_from`` is applied here.
        model_config: its family config (saved in every checkpoint and the export).
        loss_fn: ``(net, batch, ctx) -> (loss_sum, count[, stats])``; ``net`` is the
            wrapped model (call ``net(batch, ...)`` so DDP sees the forward).
        validate: ``(model, ctx) -> {name: value}`` on the dev set, called on every rank
            with the unwrapped model in eval mode under ``torch.no_grad`` (it may shard by
            ``ctx.info`` and all-reduce); None = no validation.
        metric: the key of ``validate``'s result that selects the exported weights and
            drives early stopping ("loss" by default).
        higher_is_better: for ``metric`` (accuracy) rather than lower (error rates, loss).
        parts: optional model-directory parts written with the export and every
            checkpoint (``{"tokenizer": tok}``, ``{"labels": [...]}``; see
            :data:`speechfm.models.io.PARTS`).
        dataset: map-style dataset over CutSets giving the batch dict of the module doc;
            default :class:`~speechfm.data.dataset.AsrDataset` with the model's fbank.
        stateful: more objects checkpointed and restored by name (e.g. an EMA teacher).
        find_unused_parameters: DDP: some parameters may get no gradient in a step.
        summary: more entries for train_summary.json.
        resume: continue from the latest complete checkpoint (exactly: weights,
            optimizer, schedule, data position, RNG); without one, start afresh.

    Fine-tuning options of ``config`` (all by parameter name, all off by default):
    ``freeze_prefixes`` sets ``requires_grad=False`` before the model is wrapped, so
    DDP/FSDP and the optimizer never see those parameters. ``layer_lr_decay`` gives the
    optimizer one decayed / non-decayed group pair per lr scale
    (:func:`speechfm.train.optim.layer_lr_scales`); the schedule multiplies each group's
    own peak rate. ``freeze_encoder_steps`` = N keeps the ``encoder.*`` parameters in the
    optimizer (and in the forward and backward, so DDP finds no unused parameter) but
    drops their gradients just before each of the first N updates
    (:func:`speechfm.train.optim.hold_parameters`): AdamW then skips them entirely (no
    weight decay, no moments), so they stay bit-identical through update N and start
    with fresh Adam moments at update N + 1, as in fairseq. The hold reads the step
    counter that checkpoints restore, so a resumed run holds until update N too. The
    gradient norm clipped during the hold still includes the encoder's gradient.

    Raises:
        DataError: unreadable manifests, or no training batches at all.
        ValueError: an invalid configuration, or a resumed checkpoint of another model.
    """
    from torch.utils.data import DataLoader

    from speechfm import train as T
    from speechfm.data.sampler import make_sampler
    from speechfm.models.io import PARTS, init_weights, model_dir_config, save_model_dir
    from speechfm.train.distributed import all_reduce_sum
    from speechfm.train.optim import (
        create_optimizer,
        freeze_parameters,
        hold_parameters,
        keep_frozen_in_eval,
    )

    config.validate()
    exp = Path(config.exp_dir)
    device = None if config.device == "auto" else ("cuda" if config.device.startswith("cuda") else "cpu")
    info = T.init_distributed(device=device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    threads = config.num_threads or max(1, _usable_cores() // max(local_world, 1))
    if info.device.type == "cpu":
        torch.set_num_threads(threads)
    T.setup_logging(exp, rank=info.rank)
    parts = {k: v for k, v in (parts or {}).items() if v is not None}

    if config.init_from:
        init_weights(model, config.init_from, config.init_prefixes)
    model.to(info.device)
    # Before wrapping: DDP/FSDP leave parameters without requires_grad out of the reduction.
    frozen = freeze_parameters(model, config.freeze_prefixes) if config.freeze_prefixes else []
    if frozen:  # no dropout, no BatchNorm statistics updates in what is frozen whole
        keep_frozen_in_eval(model, config.freeze_prefixes)
    num_params = sum(p.numel() for p in model.parameters())
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dir_config = model_dir_config(model_config, parts=list(parts))

    def write_parts(directory: Path) -> None:
        for name, value in parts.items():
            PARTS[name].save(value, directory / PARTS[name].file)

    train_cuts = load_cuts(config.train_cuts).filter(
        partial(_keep_duration, low=config.min_utt_duration, high=config.max_utt_duration))
    perturb = HashedSpeedPerturb(config.speed_factors, config.seed) if config.speed_perturb else None
    if dataset is None:
        from speechfm.data.dataset import AsrDataset

        dataset = AsrDataset(fbank_config=model.encoder.fbank.config,
                             cut_transforms=[perturb] if perturb is not None else [])
    elif perturb is not None:
        raise ValueError("speed_perturb works with the default dataset; a recipe's own "
                         "dataset applies its own transforms")
    sampler = T.ResumableSampler(make_sampler(
        train_cuts, max_duration=config.max_duration, seed=config.seed,
        num_buckets=config.num_buckets, world_size=info.world_size, rank=info.rank))

    total_steps = config.max_steps
    if total_steps is None and config.num_epochs is not None:
        seconds = sum(c.duration for c in train_cuts)
        per_epoch = math.ceil(seconds / config.max_duration / info.world_size / config.accum_grad)
        total_steps = max(1, per_epoch * config.num_epochs)
        log.info("step budget estimated from %d epochs of %.2f h: %d updates",
                 config.num_epochs, seconds / 3600, total_steps)
    scheduler_config = config.scheduler
    if not scheduler_config.total_steps and total_steps:
        scheduler_config = dataclasses.replace(scheduler_config, total_steps=total_steps)
    # Wrap before building the optimizer: FSDP replaces the parameters with shards.
    ddp = T.wrap_model(model, info, strategy=config.strategy,
                       find_unused_parameters=find_unused_parameters)
    optimizer = create_optimizer(model, config.optimizer, freeze_prefixes=config.freeze_prefixes,
                                 layer_lr_decay=config.layer_lr_decay)
    scheduler = T.create_scheduler(optimizer, scheduler_config)
    amp_dtype = T.resolve_amp_dtype(config.amp, info.device)
    scaler = T.create_grad_scaler(amp_dtype, info.device)
    state = T.TrainState()
    held = [p for n, p in model.named_parameters()
            if config.freeze_encoder_steps and n.startswith("encoder.") and p.requires_grad]
    if config.freeze_encoder_steps and not held:
        raise ValueError("freeze_encoder_steps: the model has no trainable encoder.* parameter")
    model_avg = T.ModelAverager(model, period=config.average_period)
    ckpts = exp / CKPT_DIR
    ckpt_parts = dict(optimizer=optimizer, scheduler=scheduler, sampler=sampler, state=state,
                      model_avg=model_avg, scaler=scaler, stateful=stateful)
    extra: dict[str, Any] = {"train_seconds": 0.0, "skipped_cuts": 0, "best_metric": None,
                             "bad_validations": 0}
    if resume and (latest := T.find_latest_checkpoint(ckpts)) is not None:
        saved = T.load_config(latest)
        if saved.get("model") != dir_config["model"]:
            raise ValueError(f"{latest}: saved model config differs from this run's; "
                             "use another exp_dir or the original settings")
        loaded = T.load_checkpoint(latest, model=ddp, **ckpt_parts)
        extra.update(loaded.get("extra") or {})
        log.info("resumed from %s (step %d, epoch %d)", latest, state.step, state.epoch)
    elif resume:
        log.info("no checkpoint under %s: starting afresh", ckpts)
    if config.freeze_encoder_steps:
        # After the restore: torch's FSDP optimizer loader fills the state of every
        # parameter only into an optimizer without any. The hold reads state.step, which
        # the checkpoint restored, so a resumed run holds until the same update.
        hold_parameters(optimizer, held, lambda: state.step < config.freeze_encoder_steps)

    if info.is_main:
        exp.mkdir(parents=True, exist_ok=True)
        _write_yaml(exp / "train_config.yaml", config.to_dict())
        log.info("%s model: %.2fM parameters (%.2fM trainable), %d threads, device %s",
                 dir_config["family"], num_params / 1e6, num_trainable / 1e6, threads, info.device)
        if frozen:
            log.info("frozen: %d parameter tensors under %s", len(frozen),
                     ", ".join(config.freeze_prefixes))
        if config.freeze_encoder_steps:
            log.info("encoder.* held unchanged for the first %d updates",
                     config.freeze_encoder_steps)
        if config.layer_lr_decay != 1.0:
            log.info("layer-wise lr decay %g: lr scales %s", config.layer_lr_decay, sorted(
                {round(g["lr_scale"], 6) for g in optimizer.param_groups}, reverse=True))
    logger = T.TrainLogger(exp, enabled=info.is_main, total_steps=config.max_steps,
                           start_step=state.step, progress=config.progress,
                           log_every=config.log_every)
    ctx = RunContext(config=config, info=info, state=state, exp_dir=exp)

    def train_loss(net, batch):
        if config.volume_perturb_db > 0 and batch["cut_ids"]:
            # A gain of g dB adds g * ln(10) / 10 to every log-mel value. Drawn from the
            # global RNG, which checkpoints restore, so resuming stays exact.
            feats = batch["features"].to(info.device)
            db = (torch.rand(feats.shape[0]) * 2 - 1) * config.volume_perturb_db
            batch = dict(batch, features=feats + (db * math.log(10) / 10).to(feats)[:, None, None])
        return loss_fn(net, batch, ctx)

    def run_validation(tag: str = "valid") -> dict[str, float] | None:
        if validate is None:
            return None
        net = T.unwrap_model(ddp)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                result = dict(validate(net, ctx))
        finally:
            net.train(was_training)
        if metric not in result:
            raise KeyError(f"validate() returned {sorted(result)}, without the metric {metric!r}")
        logger.log_scalars({f"{tag}/{k}": v for k, v in result.items() if k != "count"}, state.step)
        logger.write(f"step {state.step}: {tag} " + " ".join(
            f"{k} {v:.4f}" for k, v in result.items() if k != "count"))
        return result

    start = time.perf_counter()
    done_before = float(extra.get("train_seconds", 0.0))
    stop_reason: dict[str, str | None] = {"value": None}

    def elapsed() -> float:
        return done_before + time.perf_counter() - start

    def checkpoint() -> None:
        extra["train_seconds"] = elapsed()
        T.save_checkpoint(ckpts, T.checkpoint_name(step=state.step), model=ddp, config=dir_config,
                          extra=extra, keep_last=config.keep_last, write_files=write_parts,
                          **ckpt_parts)

    def out_of_time() -> bool:
        flag = torch.tensor(
            [1.0 if config.max_minutes is not None and elapsed() >= 60 * config.max_minutes else 0.0],
            dtype=torch.float64, device=info.device)
        if info.is_distributed:  # rank 0's clock decides for everyone
            flag = flag if info.is_main else torch.zeros_like(flag)
            all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def early_stop(result: Mapping[str, float]) -> bool:
        value = float(result[metric])
        if _better(value, extra.get("best_metric"), higher_is_better):
            extra["best_metric"], extra["bad_validations"] = value, 0
        else:
            extra["bad_validations"] = int(extra.get("bad_validations", 0)) + 1
        patience = config.early_stopping_patience
        return patience is not None and extra["bad_validations"] >= patience

    def on_step(result, _state) -> bool:
        if config.max_steps is not None and state.step >= config.max_steps:
            stop_reason["value"] = "max_steps"
        elif out_of_time():
            stop_reason["value"] = "max_minutes"
        if result.skipped:
            logger.write(f"step {state.step}: update skipped ({result.reason})")
        elif config.freeze_encoder_steps and state.step == config.freeze_encoder_steps:
            logger.write(f"step {state.step}: encoder unfrozen from the next update")
        if (state.step % config.valid_every == 0 and not result.skipped
                and stop_reason["value"] is None):
            valid = run_validation()
            if valid is not None and early_stop(valid):
                stop_reason["value"] = "early_stopping"
                logger.write(f"step {state.step}: {metric} did not improve for "
                             f"{extra['bad_validations']} validations; stopping")
        if (state.step % config.save_every == 0 and not result.skipped) or stop_reason["value"]:
            checkpoint()
        return stop_reason["value"] is not None

    def track_bad(batches):
        for batch in batches:
            if batch.get("skipped_cut_ids"):
                extra["skipped_cuts"] = int(extra.get("skipped_cuts", 0)) + len(batch["skipped_cut_ids"])
                logger.write(f"skipped bad cuts: {batch['skipped_cut_ids']}")
            yield batch

    if config.max_steps is not None and state.step >= config.max_steps:
        stop_reason["value"] = "max_steps"
    while stop_reason["value"] is None:
        if config.num_epochs is not None and state.epoch >= config.num_epochs:
            stop_reason["value"] = "num_epochs"
            checkpoint()
            break
        sampler.set_epoch(state.epoch)
        if perturb is not None:
            perturb.epoch = state.epoch
        loader = DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=config.num_workers,
            worker_init_fn=_worker_init if config.num_workers else None,
            generator=torch.Generator().manual_seed(config.seed + state.epoch),
            persistent_workers=False)
        fresh = state.batch_in_epoch == 0
        epoch = T.train_one_epoch(
            ddp, track_bad(sampler.track(loader)), train_loss, optimizer, state=state,
            accum_grad=config.accum_grad, scheduler=scheduler, scaler=scaler,
            amp_dtype=amp_dtype, max_grad_norm=config.max_grad_norm, model_avg=model_avg,
            logger=logger, batch_size_fn=lambda b: len(b["cut_ids"]), on_step=on_step)
        if epoch.completed:
            logger.write(f"epoch {state.epoch} done: loss {epoch.loss:.4f}, {epoch.steps} "
                         f"updates, {epoch.seconds:.0f} s")
        if fresh and epoch.completed and epoch.batches == 0:
            raise DataError(f"{config.train_cuts}: no training batches (all cuts filtered out?)")
    train_seconds = elapsed()
    final_valid = run_validation()
    final_dir = exp / FINAL_DIR
    chosen, candidates, weights = "last", {}, None
    if info.is_main:
        # On rank 0 alone, with a fresh single-process copy (FSDP shards the trained one).
        chosen, candidates, weights = _choose_weights(
            config, model_config, dataclasses.replace(ctx, info=T.DistInfo(device=info.device)),
            validate, metric, higher_is_better)
    try:
        logger.close()
    except ValueError as e:  # a run shorter than log_every has no curve to draw
        log.info("no curves.png: %s", e)
    out: dict[str, Any] = {}
    if info.is_main:
        save_model_dir(final_dir, weights, model_config, parts=parts)
        out = {
            "command": _command_line(),
            "seed": config.seed,
            "stop_reason": stop_reason["value"],
            "steps": state.step,
            "epochs_completed": state.epoch,
            "skipped_updates": state.skipped_steps,
            "skipped_cuts": int(extra.get("skipped_cuts", 0)),
            "train_seconds": round(train_seconds, 1),
            "hardware": _hardware(info.device, threads, info.world_size),
            "num_params": num_params,
            "num_trainable_params": num_trainable,
            "family": dir_config["family"],
            "train_data": _sizes(train_cuts),
            "dev_data": _sizes(load_cuts(config.dev_cuts)) if config.dev_cuts else None,
            "metric": {"name": metric, "higher_is_better": higher_is_better,
                       "best_during_training": extra.get("best_metric")},
            "final_valid_last_weights": final_valid,
            "average": {"chosen": chosen, "candidates": candidates},
            **dict(summary or {}),
            "loss_curve": _loss_curve(exp),
            "config": config.to_dict(),
        }
        (exp / SUMMARY_FILE).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
        log.info("exported %s (%s weights) after %d updates in %.1f min", final_dir, chosen,
                 state.step, train_seconds / 60)
    T.barrier()
    T.cleanup_distributed()
    return RunResult(final_dir, out)


def _choose_weights(config: RunConfig, model_config: Any, ctx: RunContext, validate, metric: str,
                    higher: bool) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """The exported weights: with ``average: auto`` the best by ``metric`` among the last
    weights, the mean of the last checkpoints and the running average between the
    checkpoint ``average_last`` saves back and the last one (icefall's
    ``--use-averaged-model``); without validation ``auto`` takes the checkpoint average."""
    from speechfm import train as T
    from speechfm.models.io import family_of_config, read_weights

    ckpts = T.list_checkpoints(Path(config.exp_dir) / CKPT_DIR, prefix="step-")
    if not ckpts:
        raise ValueError(f"{config.exp_dir}: no checkpoint to export")
    n = min(config.average_last, len(ckpts))
    makers = {"last": lambda: read_weights(ckpts[-1])}
    if n > 1:
        makers["checkpoints"] = lambda: T.average_checkpoints(ckpts[-n:])
    if len(ckpts) > n:
        try:
            between = T.average_between(ckpts[-n - 1], ckpts[-1])
        except ValueError as e:  # no averaging update between the two (average_period)
            log.info("no model_avg candidate: %s", e)
        else:
            makers["model_avg"] = lambda: between
    wanted = config.average
    if wanted == "best":
        if validate is None:
            raise ValueError("average: best needs a dev set (dev_cuts) to choose by")
        makers = {c.name: (lambda c=c: read_weights(c)) for c in ckpts}
    if wanted not in ("auto", "best") and wanted not in makers:
        log.warning("average=%s needs more checkpoints than the %d kept; exporting the last "
                    "weights", wanted, len(ckpts))
        wanted = "last"
    model = family_of_config(model_config).create(model_config).to(ctx.device).eval()
    own = model.state_dict()

    def cast(state):
        return {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}

    candidates: dict[str, Any] = {}
    if wanted == "best" or (wanted == "auto" and validate is not None and len(makers) > 1):
        best = None
        for name, make in makers.items():
            weights = cast(make())
            model.load_state_dict(weights)
            with torch.no_grad():
                result = dict(validate(model, ctx))
            log.info("dev with %s weights: %s", name,
                     " ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "count"))
            candidates[name] = result
            if best is None or _better(float(result[metric]), best[1], higher):
                best = (name, float(result[metric]), weights)
        chosen, _, weights = best
    else:
        chosen = ("checkpoints" if "checkpoints" in makers else "last") if wanted == "auto" else wanted
        weights = cast(makers[chosen]())
    return chosen, candidates, weights
