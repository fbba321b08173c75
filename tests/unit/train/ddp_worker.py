"""Worker for the 2-process gloo test, launched by ``torchrun --nproc-per-node 2``.

For each strategy (DDP, then FSDP2), each rank takes its half of a fixed global batch (as
two uneven micro-batches), trains via speechfm.train, saves a checkpoint after ``--save-at`` updates,
and writes the final full parameters (rank 0). It then rebuilds everything, resumes from
the checkpoint and redoes the remaining updates, writing those parameters too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from speechfm import train as T
from speechfm.train.distributed import is_fsdp

GLOBAL_BATCH = 16
DIM, CLASSES = 6, 3


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(DIM, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, CLASSES)
    ).double()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(42)
    x = torch.randn(GLOBAL_BATCH, DIM, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=gen)


def loss_fn(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y, reduction="sum"), len(y)


def build(info: T.DistInfo, strategy: str):
    model = T.wrap_model(build_model(), info, strategy=strategy, shard_modules=(nn.Linear,))
    if strategy == "fsdp":
        assert is_fsdp(model) and all(hasattr(p, "device_mesh") for p in model.parameters())
    else:
        assert isinstance(model, nn.parallel.DistributedDataParallel)
    # Optimizers are built on the wrapped model: FSDP2 replaces parameters by DTensors.
    opt = T.create_optimizer(model, T.OptimizerConfig(lr=0.05, weight_decay=0.01))
    sched = T.create_scheduler(opt, T.SchedulerConfig(kind="noam", warmup_steps=2))
    return model, opt, sched, T.TrainState(), T.ModelAverager(model, period=1)


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, param in T.unwrap_model(model).named_parameters():
        value = param.detach()
        out[name] = value.full_tensor() if hasattr(value, "full_tensor") else value.clone()
    return out


def run(info: T.DistInfo, strategy: str, out: Path, steps: int, save_at: int) -> None:
    x, y = global_batch()
    half = GLOBAL_BATCH // info.world_size
    lo = info.rank * half
    # Two uneven micro-batches per rank: normalisation must be by the global count.
    micro = [(x[lo : lo + 5], y[lo : lo + 5]), (x[lo + 5 : lo + half], y[lo + 5 : lo + half])]
    ckpts = out / f"ckpt-{strategy}"

    model, opt, sched, state, avg = build(info, strategy)
    losses = []
    for _ in range(steps):
        result = T.train_step(
            model,
            micro,
            loss_fn,
            opt,
            state=state,
            scheduler=sched,
            max_grad_norm=1.0,
            model_avg=avg,
        )
        losses.append(result.loss)
        if state.step == save_at:
            T.save_checkpoint(
                ckpts,
                T.checkpoint_name(step=state.step),
                model=model,
                config={"dim": DIM},
                optimizer=opt,
                scheduler=sched,
                state=state,
                model_avg=avg,
            )
    final = full_params(model)

    model2, opt2, sched2, state2, avg2 = build(info, strategy)
    T.load_checkpoint(
        T.find_latest_checkpoint(ckpts),
        model=model2,
        optimizer=opt2,
        scheduler=sched2,
        state=state2,
        model_avg=avg2,
    )
    while state2.step < steps:
        T.train_step(
            model2,
            micro,
            loss_fn,
            opt2,
            state=state2,
            scheduler=sched2,
            max_grad_norm=1.0,
            model_avg=avg2,
        )
    resumed = full_params(model2)

    if info.is_main:
        torch.save({"final": final, "resumed": resumed}, out / f"params-{strategy}.pt")
    (out / f"losses-{strategy}-rank{info.rank}.json").write_text(json.dumps(losses))
    T.barrier()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--strategies", default="ddp,fsdp")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--save-at", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    info = T.init_distributed()
    assert info.world_size == 2 and info.backend == "gloo", info
    for strategy in args.strategies.split(","):
        run(info, strategy, args.out, args.steps, args.save_at)
    T.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
