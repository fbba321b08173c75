#!/usr/bin/env python3
"""ASiT pretraining recipe (Atito et al., "ASiT: Local-Global Audio Spectrogram vIsion
Transformer for Event Classification"): group masked model learning with local and global
self-distillation of a spectrogram transformer on unlabelled clips.

    python recipes/asit/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--print-config]
        [key=value ...]
    torchrun --nproc-per-node 2 recipes/asit/train.py CONFIG.yaml ...   (data parallel, ddp)

CONFIG holds the fields of :class:`AsitConfig` below: the run's settings
(:class:`speechfm.train.RunConfig`; ``train_cuts`` need no labels) plus the model: a named
size ``asit_mini`` / ``asit_tiny`` / ``asit_small`` (heads on the AST sizes ``ast_mini`` /
``ast_tiny`` / ``ast_small``, which are accepted as aliases) with ``model:`` overrides -
``model.backbone.*`` (e.g. ``target_frames``), ``model.masking.*`` (GMML: ``shape``
block/time/freq, ``fill`` noise/zeros, the masked fraction), ``model.views.*`` and
``model.loss.*`` (the three loss weights, temperatures, centring). The ablation of the
paper is a change of loss weights: ``model.loss.global_weight=0
model.loss.local_weight=0`` trains reconstruction only (``configs/ablation_*.yaml``).

Each step: two views of every clip (random time shift / crop and gain); the student sees
them GMML-corrupted, the EMA teacher (:class:`~speechfm.models.asit.AsitTeacher`, momentum
0.996 -> 1 on a cosine over the run, checkpointed so ``--resume`` is exact) sees them
clean. The run logs each loss term, the teacher's temperature, momentum and output
entropy and the masked fraction to TensorBoard and curves.png; validation computes the
same losses on ``dev_cuts`` (seeded views and masks, the final teacher temperature;
metric ``loss``). ``init_from=DIR`` starts the backbone from another model's ``encoder.*``
(an ``ast`` classifier, a converted AST checkpoint of the same shape).

The exported ``EXP/final`` is an ``asit`` model directory (the student's weights):
``speechfm.load(EXP/final).embed(audio)`` gives its patch tokens, and an ``ast``
classifier of the same backbone size fine-tunes it with ``init_from=EXP/final``
(``init_prefixes: [encoder.]``, the default).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from speechfm.train import RunConfig

log = logging.getLogger("speechfm.recipes.asit")

SIZES = ("mini", "tiny", "small")


@dataclass(kw_only=True)
class AsitConfig(RunConfig):
    """An ASiT pretraining run: :class:`RunConfig` plus the model and the teacher."""

    model_size: str = "asit_tiny"
    """Named size: asit_mini, asit_tiny or asit_small (ast_mini / ast_tiny / ast_small
    backbones; those names are accepted too)."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested (``{"backbone": {"target_frames":
    100}, "masking": {"shape": "time"}, "loss": {"global_weight": 0}}``)."""
    teacher_momentum: float = 0.996
    """EMA momentum of the teacher at the first update."""
    teacher_momentum_end: float = 1.0
    """Momentum reached (cosine) at the end of ``teacher_momentum_steps``."""
    teacher_momentum_steps: int = 0
    """Updates of the momentum schedule; 0 = the run's budget (``max_steps``, else
    estimated from ``num_epochs`` as the run does)."""
    exp_dir: str = "exp/asit"
    """Output directory of the run."""

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.teacher_momentum <= self.teacher_momentum_end <= 1.0:
            raise ValueError("need 0 <= teacher_momentum <= teacher_momentum_end <= 1, got "
                             f"{self.teacher_momentum} and {self.teacher_momentum_end}")
        if self.teacher_momentum_steps < 0:
            raise ValueError("teacher_momentum_steps must be >= 0")
        if not (self.teacher_momentum_steps or self.max_steps or self.num_epochs):
            raise ValueError("the teacher's momentum schedule needs a step budget: set "
                             "max_steps, num_epochs or teacher_momentum_steps")
        if self.strategy != "ddp":
            raise ValueError("ASiT's EMA teacher follows unsharded weights: strategy must be ddp")
        build_model_config(self)


def build_model_config(config: AsitConfig):
    """The named size with the ``model`` overrides applied."""
    from speechfm.config import named_config
    from speechfm.models import asit

    sizes = {}
    for name in SIZES:
        sizes[f"asit_{name}"] = sizes[f"ast_{name}"] = getattr(asit, f"asit_{name}")
    return named_config(sizes, config.model_size, config.model)


def momentum_steps(config: AsitConfig) -> int:
    """Updates of the teacher's momentum schedule (see ``teacher_momentum_steps``)."""
    if config.teacher_momentum_steps:
        return config.teacher_momentum_steps
    if config.max_steps:
        return config.max_steps
    # As the run estimates its budget from num_epochs (without speed perturbation).
    from speechfm.train.runner import load_cuts

    seconds = sum(c.duration for c in load_cuts(config.train_cuts)
                  if config.min_utt_duration <= c.duration <= config.max_utt_duration)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = math.ceil(seconds / config.max_duration / world / config.accum_grad)
    return max(1, per_epoch * config.num_epochs)


STAT_KEYS = ("global_loss", "local_loss", "recon_loss", "teacher_entropy", "mask_fraction",
             "masked_patches")


def validate_asit(model, teacher, cuts, *, ctx, seed: int, max_duration: float) -> dict[str, float]:
    """Dev pretraining loss and its terms (views and masks from a seeded generator, so
    every validation sees the same ones and the global RNG is untouched; the final
    teacher temperature; centres left as they are)."""
    import torch

    from speechfm.data.dataset import iterate_batches
    from speechfm.train.distributed import all_reduce_sum

    generator = torch.Generator().manual_seed(seed)
    teacher_net = teacher.module
    sums = torch.zeros(2 + len(STAT_KEYS), dtype=torch.float64)
    for batch in iterate_batches(cuts, model.encoder.fbank.config, max_duration=max_duration,
                                 world_size=ctx.info.world_size, rank=ctx.info.rank):
        if not batch["cut_ids"]:
            continue
        loss, count, stats = model(batch, teacher=teacher_net, generator=generator)
        sums[0] += float(loss)
        sums[1] += count
        for i, key in enumerate(STAT_KEYS):
            sums[2 + i] += stats.get(key, 0.0)
    if ctx.info.world_size > 1:
        all_reduce_sum(sums)
    n = max(float(sums[1]), 1.0)
    weights = model.weights
    present = {"global_loss": weights["global"] > 0, "local_loss": weights["local"] > 0,
               "recon_loss": weights["recon"] > 0, "teacher_entropy": weights["global"] > 0}
    return {"loss": float(sums[0]) / n, "count": float(sums[1]),
            **{key: float(sums[2 + i]) / n for i, key in enumerate(STAT_KEYS)
               if present.get(key, True)}}


def train(config: AsitConfig, *, resume: bool = False):
    """Pretrain and export; returns the :class:`speechfm.train.RunResult`."""
    from speechfm.models.asit import AsitTeacher, create_asit_model
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    model_config = build_model_config(config)
    model = create_asit_model(model_config)
    teacher = AsitTeacher(model, total_steps=momentum_steps(config),
                          momentum_start=config.teacher_momentum,
                          momentum_end=config.teacher_momentum_end)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None

    def loss_fn(net, batch, ctx):
        step = ctx.state.step
        teacher.follow(step)  # the EMA update for the student's last update
        loss, count, stats = net(batch, teacher=teacher.module, step=step)
        stats["teacher_momentum"] = count * teacher.momentum(step)
        return loss, count, stats

    def validate(net, ctx):
        return validate_asit(net, teacher, dev_cuts, ctx=ctx, seed=config.seed,
                             max_duration=config.max_duration)

    weights = model.weights
    return run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None, metric="loss",
        stateful={"teacher": teacher},
        # a head whose loss weight is 0 gets no gradient
        find_unused_parameters=min(weights.values()) == 0,
        summary={"model_size": config.model_size, "teacher_momentum_steps": teacher.total_steps},
        resume=resume,
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, AsitConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
