"""Training utilities: small functions and classes that a recipe composes into its own loop.

There is no Trainer base class. Most recipes call :func:`~speechfm.train.runner.run` (the
generic run function: budgets, resume, validation, early stopping, averaging, export)
with their own loss and validation functions; a recipe that needs another loop composes
the pieces it uses:

* :mod:`~speechfm.train.runner` - ``RunConfig`` (embedded in every recipe's config) and ``run``
* :mod:`~speechfm.train.ema` - ``EmaWeights`` (EMA teachers) and ``cosine_momentum``

* :mod:`~speechfm.train.optim` - AdamW/Adam with weight decay kept off norms and biases
* :mod:`~speechfm.train.schedulers` - Noam, tri-stage, cosine, constant (all with warmup)
* :mod:`~speechfm.train.loop` - ``train_step`` (accumulation, clipping, AMP, NaN/Inf
  skipping), ``train_one_epoch``, ``evaluate``, ``TrainState``
* :mod:`~speechfm.train.checkpoint` - atomic checkpoint dirs, ``--resume`` from the latest
  complete one, ``ResumableSampler`` for exact mid-epoch resumption behind a DataLoader
* :mod:`~speechfm.train.average` - checkpoint averaging and the running ``ModelAverager``
* :mod:`~speechfm.train.distributed` - torchrun process group, DDP / FSDP2 wrapping
* :mod:`~speechfm.train.logging` - tqdm bar, TensorBoard scalars, ``plot_curves``
* :mod:`~speechfm.train.rng` - seeding and weights_only-safe RNG state capture

A recipe's loop, composed (``loss_fn`` returns the loss *summed* over the batch and the
number of items it sums over, so accumulation and data parallelism normalise exactly)::

    from speechfm import train as T

    info = T.init_distributed()  # reads torchrun's env; single process without it
    T.seed_everything(cfg.seed, rank=info.rank)
    model = create_conformer_model(cfg.model).to(info.device)
    optimizer = T.create_optimizer(model, T.OptimizerConfig(lr=cfg.lr, weight_decay=0.01))
    scheduler = T.create_scheduler(optimizer, T.SchedulerConfig(
        kind="tri_stage", total_steps=cfg.steps, phase_ratios=(0.1, 0.4, 0.5)))
    sampler = T.ResumableSampler(make_sampler(cuts, max_duration=200.0, seed=cfg.seed,
                                              world_size=info.world_size, rank=info.rank))
    # An own generator keeps DataLoader iteration off the global RNG that dropout uses.
    loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2,
                        generator=torch.Generator().manual_seed(cfg.seed))
    state, model_avg, ckpts = T.TrainState(), T.ModelAverager(model, period=100), exp / "ckpt"
    parts = dict(optimizer=optimizer, scheduler=scheduler, sampler=sampler, state=state,
                 model_avg=model_avg)
    if args.resume and (latest := T.find_latest_checkpoint(ckpts)) is not None:
        T.load_checkpoint(latest, model=model, **parts)  # weights, counters, RNG, batch order
    ddp = T.wrap_model(model, info, strategy="ddp")  # or "fsdp" for large models
    logger = T.TrainLogger(exp, enabled=info.is_main, total_steps=cfg.steps,
                           start_step=state.step)

    def loss_fn(model, batch):  # -> (loss summed over the batch, number of utterances)
        logits, lens = model(batch["inputs"].to(info.device), batch["x_lens"].to(info.device))
        return ctc_loss_sum(logits, lens, batch), len(lens)

    def on_step(result, state):  # mid-epoch checkpoints make --resume exact
        if state.step % cfg.save_every == 0:
            T.save_checkpoint(ckpts, T.checkpoint_name(step=state.step), model=ddp,
                              config=config_json, keep_last=3, **parts)
        return state.step >= cfg.steps  # True stops the epoch

    while state.step < cfg.steps:
        sampler.set_epoch(state.epoch)
        T.train_one_epoch(ddp, sampler.track(loader), loss_fn, optimizer, state=state,
                          accum_grad=cfg.accum_grad, scheduler=scheduler, max_grad_norm=5.0,
                          amp_dtype=T.resolve_amp_dtype("auto", info.device),
                          model_avg=model_avg, logger=logger, on_step=on_step)
    T.save_checkpoint(ckpts, "final", model=ddp, config=config_json, tokenizer=tokenizer, **parts)
    logger.close()  # flushes TensorBoard and writes exp/curves.png
    T.cleanup_distributed()

``save_checkpoint`` and ``load_checkpoint`` are called on every rank; only rank 0 writes.
"""

from speechfm.train.average import (
    ModelAverager,
    average_between,
    average_checkpoints,
    average_state_dicts,
)
from speechfm.train.checkpoint import (
    ResumableSampler,
    checkpoint_name,
    find_latest_checkpoint,
    is_complete_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_config,
    load_model_weights,
    save_checkpoint,
)
from speechfm.train.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    unwrap_model,
    wrap_model,
)
from speechfm.train.ema import EmaWeights, cosine_momentum
from speechfm.train.logging import (
    TrainLogger,
    plot_curves,
    read_scalars,
    setup_logging,
    splice_tables,
)
from speechfm.train.loop import (
    EpochSummary,
    StepResult,
    TrainState,
    amp_autocast,
    create_grad_scaler,
    evaluate,
    resolve_amp_dtype,
    train_one_epoch,
    train_step,
)
from speechfm.train.optim import OptimizerConfig, create_optimizer, param_groups
from speechfm.train.rng import get_rng_state, seed_everything, set_rng_state
from speechfm.train.runner import RunConfig, RunContext, RunResult, run, seed_run
from speechfm.train.schedulers import (
    ConstantSchedule,
    CosineSchedule,
    NoamSchedule,
    SchedulerConfig,
    StepScheduler,
    TriStageSchedule,
    create_scheduler,
)

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "DistInfo",
    "EmaWeights",
    "EpochSummary",
    "ModelAverager",
    "NoamSchedule",
    "OptimizerConfig",
    "ResumableSampler",
    "RunConfig",
    "RunContext",
    "RunResult",
    "SchedulerConfig",
    "StepResult",
    "StepScheduler",
    "TrainLogger",
    "TrainState",
    "TriStageSchedule",
    "amp_autocast",
    "average_between",
    "average_checkpoints",
    "average_state_dicts",
    "barrier",
    "checkpoint_name",
    "cleanup_distributed",
    "cosine_momentum",
    "create_grad_scaler",
    "create_optimizer",
    "create_scheduler",
    "evaluate",
    "find_latest_checkpoint",
    "get_rng_state",
    "init_distributed",
    "is_complete_checkpoint",
    "is_main_process",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_model_weights",
    "param_groups",
    "plot_curves",
    "read_scalars",
    "run",
    "seed_run",
    "resolve_amp_dtype",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "setup_logging",
    "splice_tables",
    "train_one_epoch",
    "train_step",
    "unwrap_model",
    "wrap_model",
]
