"""ASR training as a library function: :class:`AsrTrainConfig` in, a model directory out.

``train_asr(config)`` trains a :class:`~speechfm.models.ctc.CtcModel` or a
:class:`~speechfm.models.transducer.TransducerModel` (``model_size`` ``transducer_*``,
pruned or full RNN-T loss) on lhotse cuts with precomputed (or on-the-fly) fbank features
and writes, under ``config.exp_dir``::

    checkpoints/step-NNNNNN/   resumable checkpoints (weights, optimizer, sampler, RNG, ...)
    final/                     the exported model: config.json, model.safetensors, tokenizer/
    train_summary.json         steps, time, hardware, data sizes, dev scores, averaging choice
    train_config.yaml          the resolved configuration of the run
    tensorboard/, curves.png, log/

A model directory's ``config.json`` is ``{"family": "ctc" | "transducer", "model": <config>.to_dict(),
"tokenizer": "tokenizer", "frame_shift_s": ..., "speechfm_version": ...}``; the CMVN
statistics travel in ``model.safetensors`` as buffers.

The exported weights are the best, by dev greedy CER (PER for IPA), of (``average: auto``):
the last weights, the mean of the last ``average_last`` checkpoints, and the running model
average between the checkpoint ``average_last`` saves back and the last one (icefall's
``--use-averaged-model``). Without dev cuts ``auto`` takes the checkpoint average.

The configuration (:class:`AsrTrainConfig`, :func:`load_train_config`) lives in
:mod:`speechfm.asr.config` and is re-exported here.
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
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from speechfm.asr.config import (
    MODEL_SIZES,
    AsrTrainConfig,
    apply_overrides,
    build_model_config,
    config_from_dict,
    create_model,
    load_train_config,
    model_dir_config,
)
from speechfm.errors import DataError

__all__ = [
    "MODEL_SIZES",
    "AsrTrainConfig",
    "HashedSpeedPerturb",
    "apply_overrides",
    "build_model_config",
    "config_from_dict",
    "load_train_config",
    "model_dir_config",
    "train_asr",
]

log = logging.getLogger("speechfm.asr")

CKPT_DIR = "checkpoints"
FINAL_DIR = "final"
SUMMARY_FILE = "train_summary.json"


# ------------------------------------------------------------------------ data helpers


def _keep_duration(cut, low: float, high: float) -> bool:
    return low <= cut.duration <= high


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


def _worker_init(_: int) -> None:
    # The training process owns the cores; loaders only decode features.
    torch.set_num_threads(1)


def _load_cuts(path: str):
    from lhotse import CutSet

    if not Path(path).is_file():
        raise DataError(f"{path}: no such manifest")
    return CutSet.from_jsonl_lazy(path) if str(path).endswith((".jsonl", ".jsonl.gz")) else CutSet.from_file(path)


def _resolve_device(config: AsrTrainConfig) -> str | None:
    if config.device == "auto":
        return None
    return "cuda" if config.device.startswith("cuda") else "cpu"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _hardware(device: torch.device, threads: int, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{world} x {name} (CUDA), torch {torch.__version__}"
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


# ------------------------------------------------------------------------ training


def train_asr(config: AsrTrainConfig, *, resume: bool = False) -> Path:
    """Train a CTC or transducer model as ``config`` says; returns the exported model directory.

    Works as a plain process and under ``torchrun`` (one process per device, DDP).

    Args:
        config: the run's settings (validated here).
        resume: continue from the latest complete checkpoint under
            ``exp_dir/checkpoints`` (exactly: weights, optimizer, schedule, data position,
            RNG); without one, start afresh.

    Raises:
        DataError: unreadable manifests, tokenizer or CMVN file.
        ValueError: an invalid configuration, or a resumed checkpoint of another model.
    """
    from torch.utils.data import DataLoader

    from speechfm import train as T
    from speechfm.asr.decode import evaluate_asr, resolve_targets
    from speechfm.data.dataset import AsrDataset
    from speechfm.data.sampler import make_sampler
    from speechfm.text import load_tokenizer
    from speechfm.train.distributed import all_reduce_sum

    config.validate()
    exp = Path(config.exp_dir)
    info = T.init_distributed(device=_resolve_device(config))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    threads = config.num_threads or max(1, _usable_cores() // max(local_world, 1))
    if info.device.type == "cpu":
        torch.set_num_threads(threads)
    T.setup_logging(exp, rank=info.rank)
    T.seed_everything(config.seed, rank=info.rank)

    tokenizer = load_tokenizer(config.tokenizer)
    targets = resolve_targets(config.targets, tokenizer)
    model_config = build_model_config(config, tokenizer.vocab_size)
    model = create_model(model_config)
    family = config.family
    if config.init_from:
        init_weights(model, config.init_from, config.init_prefixes)
    if config.cmvn:
        from speechfm.features.cmvn import GlobalCMVN

        if not model_config.use_cmvn:
            raise ValueError("cmvn is set but the model has use_cmvn: false")
        stats = GlobalCMVN.load(config.cmvn)
        model.set_cmvn(stats.mean, stats.var, var_floor=stats.var_floor)
    elif model_config.use_cmvn:
        log.warning("no cmvn file given: the model's CMVN stays the identity")
    model.to(info.device)
    num_params = sum(p.numel() for p in model.parameters())
    dir_config = model_dir_config(model_config)

    train_cuts = _load_cuts(config.train_cuts).filter(
        partial(_keep_duration, low=config.min_utt_duration, high=config.max_utt_duration)
    )
    perturb = HashedSpeedPerturb(config.speed_factors, config.seed) if config.speed_perturb else None
    dataset = AsrDataset(fbank_config=model_config.fbank,
                         cut_transforms=[perturb] if perturb is not None else [])
    sampler = T.ResumableSampler(make_sampler(
        train_cuts, max_duration=config.max_duration, seed=config.seed,
        num_buckets=config.num_buckets, world_size=info.world_size, rank=info.rank,
    ))
    dev_cuts = _load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None

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
    # The full RNN-T loss leaves the simple-loss projections unused.
    unused = model_config.encoder.layer_drop > 0 or (
        family == "transducer" and config.transducer_loss.kind == "full")
    ddp = T.wrap_model(model, info, strategy=config.strategy, find_unused_parameters=unused)
    optimizer = T.create_optimizer(model, config.optimizer)
    scheduler = T.create_scheduler(optimizer, scheduler_config)
    amp_dtype = T.resolve_amp_dtype(config.amp, info.device)
    scaler = T.create_grad_scaler(amp_dtype, info.device)
    state = T.TrainState()
    model_avg = T.ModelAverager(model, period=config.average_period)
    ckpts = exp / CKPT_DIR
    parts = dict(optimizer=optimizer, scheduler=scheduler, sampler=sampler, state=state,
                 model_avg=model_avg, scaler=scaler)
    extra: dict[str, Any] = {"train_seconds": 0.0, "skipped_cuts": 0}
    if resume and (latest := T.find_latest_checkpoint(ckpts)) is not None:
        saved = T.load_config(latest)
        if saved.get("model") != dir_config["model"]:
            raise ValueError(f"{latest}: saved model config differs from this run's; "
                             "use another exp_dir or the original settings")
        loaded = T.load_checkpoint(latest, model=ddp, **parts)
        extra.update(loaded.get("extra") or {})
        log.info("resumed from %s (step %d, epoch %d)", latest, state.step, state.epoch)
    elif resume:
        log.info("no checkpoint under %s: starting afresh", ckpts)

    if info.is_main:
        exp.mkdir(parents=True, exist_ok=True)
        _write_yaml(exp / "train_config.yaml", config.to_dict())
        log.info("model %s + overrides: %.2fM parameters, vocab %d (%s), targets %s, "
                 "%d threads, device %s", config.model_size, num_params / 1e6,
                 tokenizer.vocab_size, tokenizer.kind, targets, threads, info.device)
    logger = T.TrainLogger(exp, enabled=info.is_main, total_steps=config.max_steps,
                           start_step=state.step, progress=config.progress,
                           log_every=config.log_every)

    def batch_targets(batch) -> list[list[int]]:
        texts = batch.get("ipa") if targets == "ipa" else batch["texts"]
        if texts is None:
            texts = [None] * len(batch["cut_ids"])
        out = []
        for cut_id, text in zip(batch["cut_ids"], texts, strict=True):
            if text is None:
                raise DataError(f"cut {cut_id}: no {targets} transcript to train on")
            out.append(tokenizer.encode(text))
        return out

    def loss_fn(net, batch):
        from speechfm.losses.ctc import ctc_loss, pad_targets

        if not batch["cut_ids"]:
            # Every cut was bad: a zero-weight forward keeps DDP's collectives in step.
            dim = model_config.fbank.feature_dim
            probe_feats = torch.zeros(1, 32, dim, device=info.device)
            probe_lens = torch.full((1,), 32, device=info.device)
            if family == "transducer":
                probe, _ = net(probe_feats, probe_lens, targets=[[1]],
                               loss_config=config.transducer_loss, step=state.step)
            else:
                probe, _ = net(probe_feats, probe_lens)
            return probe.sum() * 0.0, 0, {"num_tokens": 0.0}
        feats = batch["features"].to(info.device)
        x_lens = batch["x_lens"].to(info.device)
        if config.volume_perturb_db > 0:
            # A gain of g dB adds g * ln(10) / 10 to every log-mel value. Drawn from the
            # global RNG, which checkpoints restore, so resuming stays exact.
            db = (torch.rand(feats.shape[0]) * 2 - 1) * config.volume_perturb_db
            feats = feats + (db * math.log(10) / 10).to(feats)[:, None, None]
        if family == "transducer":
            # Through the (DDP) wrapper's forward, so that gradients are synchronised.
            loss, stats = net(feats, x_lens, targets=batch_targets(batch),
                              loss_config=config.transducer_loss, step=state.step,
                              utt_ids=batch["cut_ids"])
            logged = {k: stats[k] for k in ("simple_loss", "pruned_loss", "full_loss", "ctc_loss")
                      if k in stats}
            logged.update(num_utts=stats["num_utts"], num_infeasible=stats["num_infinite"])
            return loss, stats["num_tokens"], logged
        padded, y_lens = pad_targets(batch_targets(batch), device=info.device)
        log_probs, out_lens = net(feats, x_lens)
        loss, per_utt = ctc_loss(log_probs, out_lens, padded, y_lens, blank=tokenizer.blank_id,
                                 reduction="sum", zero_infinity=True, utt_ids=batch["cut_ids"])
        finite = torch.isfinite(per_utt)
        # Normalised per token, so the curve reads the same for any tokenizer.
        tokens = float(y_lens[finite].sum())
        return loss, tokens, {"num_utts": float(finite.sum()),
                              "num_infeasible": float((~finite).sum())}

    def validate(tag: str = "valid") -> dict[str, float] | None:
        if dev_cuts is None:
            return None
        result = evaluate_asr(
            T.unwrap_model(ddp), dev_cuts, tokenizer, targets=targets, device=info.device,
            max_duration=config.max_duration, world_size=info.world_size, rank=info.rank,
            step=state.step, loss_config=config.transducer_loss,
        )
        logger.log_scalars({f"{tag}/{k}": v for k, v in result.items() if k != "count"},
                           state.step)
        logger.write(f"step {state.step}: {tag} loss {result['loss']:.4f} "
                     + " ".join(f"{k.upper()} {100 * result[k]:.2f}%" for k in ("cer", "per", "wer")
                                if k in result))
        return result

    start = time.perf_counter()
    done_before = float(extra.get("train_seconds", 0.0))
    stop_reason = {"value": None}

    def elapsed() -> float:
        return done_before + time.perf_counter() - start

    def checkpoint() -> None:
        extra["train_seconds"] = elapsed()
        T.save_checkpoint(ckpts, T.checkpoint_name(step=state.step), model=ddp, config=dir_config,
                          tokenizer=tokenizer, extra=extra, keep_last=config.keep_last,
                          **parts)

    def out_of_time() -> bool:
        flag = torch.tensor(
            [1.0 if config.max_minutes is not None and elapsed() >= 60 * config.max_minutes else 0.0],
            dtype=torch.float64, device=info.device)
        if info.is_distributed:  # rank 0's clock decides for everyone
            flag = flag if info.is_main else torch.zeros_like(flag)
            all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def on_step(result, _state) -> bool:
        if config.max_steps is not None and state.step >= config.max_steps:
            stop_reason["value"] = "max_steps"
        elif out_of_time():
            stop_reason["value"] = "max_minutes"
        if result.skipped:
            logger.write(f"step {state.step}: update skipped ({result.reason})")
        if state.step % config.valid_every == 0 and not result.skipped and stop_reason["value"] is None:
            validate()
        if (state.step % config.save_every == 0 and not result.skipped) or stop_reason["value"]:
            checkpoint()
        return stop_reason["value"] is not None

    def track_bad(batches):
        for batch in batches:
            if batch["skipped_cut_ids"]:
                extra["skipped_cuts"] = int(extra.get("skipped_cuts", 0)) + len(batch["skipped_cut_ids"])
                logger.write(f"skipped bad cuts: {batch['skipped_cut_ids']}")
            yield batch

    if stop_reason["value"] is None and config.max_steps is not None and state.step >= config.max_steps:
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
            persistent_workers=False,
        )
        fresh = state.batch_in_epoch == 0
        summary = T.train_one_epoch(
            ddp, track_bad(sampler.track(loader)), loss_fn, optimizer, state=state,
            accum_grad=config.accum_grad, scheduler=scheduler, scaler=scaler,
            amp_dtype=amp_dtype, max_grad_norm=config.max_grad_norm, model_avg=model_avg,
            logger=logger, batch_size_fn=lambda b: len(b["cut_ids"]), on_step=on_step,
        )
        if summary.completed:
            logger.write(f"epoch {state.epoch} done: loss {summary.loss:.4f}, {summary.steps} "
                         f"updates, {summary.seconds:.0f} s")
        if fresh and summary.completed and summary.batches == 0:
            raise DataError(f"{config.train_cuts}: no training batches (all cuts filtered out?)")
    train_seconds = elapsed()
    final_valid = validate()
    try:
        logger.close()
    except ValueError as e:  # a run shorter than log_every has no curve to draw
        log.info("no curves.png: %s", e)

    final_dir = exp / FINAL_DIR
    if info.is_main:
        chosen, candidates = _export_final(
            config, model_config, dir_config, tokenizer, targets, dev_cuts, info.device, final_dir
        )
        dev_sizes = _sizes(dev_cuts) if dev_cuts is not None else None
        summary = {
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
            "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                          "path": config.tokenizer},
            "targets": targets,
            "train_data": _sizes(train_cuts),
            "dev_data": dev_sizes,
            "final_valid_last_weights": final_valid,
            "average": {"chosen": chosen, "candidates": candidates},
            "loss_curve": _loss_curve(exp),
            "config": config.to_dict(),
        }
        (exp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
        log.info("exported %s (%s weights) after %d updates in %.1f min", final_dir, chosen,
                 state.step, train_seconds / 60)
    T.barrier()
    T.cleanup_distributed()
    return final_dir


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
    """Train/valid losses by step from TensorBoard (a summary a test or report can read)."""
    from speechfm.train import read_scalars

    try:
        scalars = read_scalars(exp)
    except (FileNotFoundError, ValueError):
        return {}
    return {tag: [[s, v] for s, v in values] for tag, values in scalars.items()
            if tag in ("train/loss", "valid/loss", "valid/cer", "valid/per")}


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


def _export_final(config, model_config, dir_config, tokenizer, targets, dev_cuts, device,
                  final_dir: Path) -> tuple[str, dict[str, Any]]:
    """Pick the exported weights (see the module doc) and write ``final_dir``."""
    from speechfm import train as T
    from speechfm.asr.decode import evaluate_asr

    ckpts = T.list_checkpoints(Path(config.exp_dir) / CKPT_DIR, prefix="step-")
    if not ckpts:
        raise ValueError(f"{config.exp_dir}: no checkpoint to export")
    n = min(config.average_last, len(ckpts))
    makers = {"last": lambda: _load_weights(ckpts[-1])}
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
    if wanted != "auto" and wanted not in makers:
        log.warning("average=%s needs more checkpoints than the %d kept; exporting the last "
                    "weights", wanted, len(ckpts))
        wanted = "last"
    model = create_model(model_config).to(device)
    candidates: dict[str, Any] = {}
    if wanted == "auto" and dev_cuts is not None and len(makers) > 1:
        best = None
        for name, make in makers.items():
            state = make()
            model.load_state_dict(_cast_like(state, model))
            result = evaluate_asr(model, dev_cuts, tokenizer, targets=targets, device=device,
                                  max_duration=config.max_duration,
                                  loss_config=config.transducer_loss)
            candidates[name] = result
            metric = result.get("per", result.get("cer"))
            log.info("dev with %s weights: %s", name,
                     " ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "count"))
            if best is None or metric < best[1]:
                best = (name, metric, state)
        chosen, _, state = best
    else:
        chosen = ("checkpoints" if "checkpoints" in makers else "last") if wanted == "auto" else wanted
        state = makers[chosen]()
    model.load_state_dict(_cast_like(state, model))
    _write_model_dir(final_dir, model, dir_config, tokenizer)
    return chosen, candidates


def init_weights(model: torch.nn.Module, source: str | os.PathLike,
                 prefixes: Sequence[str] = ("encoder.",)) -> list[str]:
    """Copy the weights of model or checkpoint directory ``source`` whose names start with
    one of ``prefixes`` into ``model`` (same name and shape); returns the names copied.

    Raises:
        FileNotFoundError: ``source`` has no model.safetensors.
        ValueError: nothing matched, or a matching name has another shape (the message
            names it): the two models do not share that part.
    """
    path = Path(source) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"init_from: {path} does not exist (expected a model or "
                                "checkpoint directory)")
    theirs = _load_weights(Path(source))
    own = model.state_dict()
    wanted = [k for k in own if any(k.startswith(p) for p in prefixes)]
    copied, missing = [], []
    for key in wanted:
        if key not in theirs:
            missing.append(key)
            continue
        if theirs[key].shape != own[key].shape:
            raise ValueError(f"init_from {source}: {key} has shape {tuple(theirs[key].shape)}, "
                             f"the model's is {tuple(own[key].shape)}")
        copied.append(key)
    if not copied:
        raise ValueError(f"init_from {source}: no weight named {list(prefixes)}* matches the model")
    with torch.no_grad():
        for key in copied:
            own[key].copy_(theirs[key].to(own[key].dtype))
    log.info("initialised %d tensors (%s*) from %s%s", len(copied), ", ".join(prefixes), source,
             f"; {len(missing)} not in it: {missing[:5]}" if missing else "")
    return copied


def _load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def _cast_like(state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    return {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}


def _write_model_dir(directory: Path, model: torch.nn.Module, dir_config: Mapping[str, Any],
                     tokenizer) -> None:
    """config.json + model.safetensors + tokenizer/, written aside and renamed into place."""
    import shutil

    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(dict(dir_config), indent=2) + "\n",
                                     encoding="utf-8")
    tokenizer.save(tmp / "tokenizer")
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(tmp, directory)

