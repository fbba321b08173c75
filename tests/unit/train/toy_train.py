"""A tiny, complete training script over speechfm.train, run as a subprocess by the tests.

It composes the pieces the way a recipe does (DataLoader over a ResumableSampler, dropout,
AdamW with weight-decay groups, tri-stage schedule, accumulation, clipping, running model
average, mid-epoch checkpoints, --resume) and prints one line per optimizer step::

    step <n> loss <loss with 17 significant digits>

so the tests can check that a run killed with SIGKILL and resumed prints exactly the losses
of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from speechfm import train as T

NUM_ITEMS = 47
BATCH = 5
DIM = 8
CLASSES = 4


class ToyBatchSampler:
    """Shuffled index batches, reproducible per (seed, epoch), resumable mid-epoch.

    Mirrors lhotse's sampler protocol: ``set_epoch``, ``state_dict`` with the number of
    batches yielded in the epoch, and ``load_state_dict`` after which the next iteration
    continues where the saved one stopped.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch = 0
        self.position = 0
        self._restored = False

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._restored = False
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.num_items, generator=gen).tolist()
        return [order[i : i + self.batch_size] for i in range(0, self.num_items, self.batch_size)]

    def __iter__(self):
        start = self.position if self._restored else 0
        self._restored = False
        self.position = start
        for batch in self._batches()[start:]:
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        assert state["seed"] == self.seed
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._restored = True


class ToyDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by a whole batch of item indices (like lhotse's)."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1234)
        self.x = torch.randn(NUM_ITEMS, DIM, generator=gen, dtype=torch.float64)
        self.y = torch.randint(0, CLASSES, (NUM_ITEMS,), generator=gen)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[indices], self.y[indices]


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(DIM, 32),
        nn.LayerNorm(32),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(32, CLASSES),
    ).double()


def loss_fn(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y, reduction="sum"), len(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exp", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=4)
    parser.add_argument(
        "--hang-after", type=int, default=0, help="block after this step (to be killed)"
    )
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    T.seed_everything(7)
    model = build_model()  # consumes RNG for init; restored RNG overrides it on resume
    optimizer = T.create_optimizer(model, T.OptimizerConfig(lr=3e-2, weight_decay=0.05))
    batches_per_epoch = -(-NUM_ITEMS // BATCH)
    steps_per_epoch = -(-batches_per_epoch // args.accum)
    scheduler = T.create_scheduler(
        optimizer,
        T.SchedulerConfig(
            kind="tri_stage",
            total_steps=steps_per_epoch * args.epochs,
            phase_ratios=(0.2, 0.3, 0.5),
        ),
    )
    model_avg = T.ModelAverager(model, period=3)
    sampler = T.ResumableSampler(ToyBatchSampler(NUM_ITEMS, BATCH, seed=11))
    loader = torch.utils.data.DataLoader(
        ToyDataset(),
        sampler=sampler,
        batch_size=None,
        num_workers=0,
        generator=torch.Generator().manual_seed(5),
    )
    state = T.TrainState()
    ckpts = args.exp / "ckpt"
    parts = dict(
        optimizer=optimizer, scheduler=scheduler, sampler=sampler, state=state, model_avg=model_avg
    )
    if args.resume:
        latest = T.find_latest_checkpoint(ckpts)
        assert latest is not None, f"nothing to resume under {ckpts}"
        T.load_checkpoint(latest, model=model, **parts)
        print(
            f"resumed {latest.name} step {state.step} epoch {state.epoch} "
            f"batch {state.batch_in_epoch}",
            flush=True,
        )

    def on_step(result, state) -> bool:
        print(f"step {state.step} loss {result.loss:.17g}", flush=True)
        if state.step % args.save_every == 0:
            T.save_checkpoint(
                ckpts,
                T.checkpoint_name(step=state.step),
                model=model,
                config={"model": "toy", "dim": DIM},
                keep_last=2,
                **parts,
            )
            print(f"saved step {state.step} batch {state.batch_in_epoch}", flush=True)
        if state.step == args.hang_after:
            time.sleep(600)  # the test kills us here, mid-epoch, with SIGKILL
        return False

    while state.epoch < args.epochs:
        sampler.set_epoch(state.epoch)
        T.train_one_epoch(
            model,
            sampler.track(loader),
            loss_fn,
            optimizer,
            state=state,
            accum_grad=args.accum,
            scheduler=scheduler,
            max_grad_norm=1.0,
            model_avg=model_avg,
            on_step=on_step,
        )
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    avg = torch.cat([v.flatten() for v in model_avg.averaged_state_dict().values()])
    print(
        f"final params {flat.sum().item():.17g} {flat.abs().sum().item():.17g} "
        f"avg {avg.sum().item():.17g}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
