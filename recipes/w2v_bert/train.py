#!/usr/bin/env python3
"""w2v-BERT pretraining recipe: contrastive + masked-prediction self-supervised training of
the shared speech encoder on unlabelled audio (Chung et al. 2021; w2v-BERT 2.0's layout).

    python recipes/w2v_bert/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--print-config]
        [key=value ...]
    torchrun --nproc-per-node 2 recipes/w2v_bert/train.py CONFIG.yaml ...   (data parallel)

CONFIG holds the fields of :class:`W2vBertConfig` below: the run's settings
(:class:`speechfm.train.RunConfig`; ``train_cuts`` need no transcripts) plus the model (a
named size ``w2v_bert_tiny`` / ``_small`` / ``_300m`` / ``_600m`` / ``_xl`` / ``_xxl`` with
overrides). ``init_from=DIR`` continues pretraining from another model's encoder (for
example a converted facebook/w2v-bert-2.0 directory, ``speechfm convert``): its
``encoder.*`` weights are kept, the quantizer and heads start fresh; with
``encoder_from_init`` the encoder's architecture is ``init_from``'s too.

The run logs each loss term, the contrastive and MLM accuracies, the codebook perplexity
and the fraction of codes used (a warning when the codebook collapses) to TensorBoard and
curves.png; the exported ``EXP/final`` is a ``w2v_bert`` model directory:
``speechfm.load(EXP/final).embed(audio, layers=...)`` gives its encoder layers, and a
CTC or transducer recipe fine-tunes it with ``init_from=EXP/final``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from speechfm.train import RunConfig

log = logging.getLogger("speechfm.recipes.w2v_bert")


@dataclass(kw_only=True)
class W2vBertConfig(RunConfig):
    """A w2v-BERT pretraining run: :class:`RunConfig` plus the model."""

    model_size: str = "w2v_bert_small"
    """Named size: w2v_bert_tiny, _small, _300m, _600m, _xl or _xxl."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested
    (``{"masking": {"mask_prob": 0.5}, "encoder": {"conformer": {"num_layers": 8}}}``)."""
    cmvn: str | None = None
    """Global CMVN JSON, for an encoder with ``normalization: global``."""
    encoder_from_init: bool = False
    """Take the encoder's configuration (front end, normalisation, Conformer) from
    ``init_from``'s config.json, so that any speechfm model's encoder (CTC, transducer,
    encoder-only, a converted checkpoint) continues pretraining as it is; ``model.encoder``
    overrides still apply on top (e.g. ``conformer.length_adapter: null``)."""
    collapse_check_every: int = 100
    """Check the codebook's usage every this many updates (a warning in the log)."""
    exp_dir: str = "exp/w2v_bert"
    """Output directory of the run."""

    def validate(self) -> None:
        super().validate()
        if self.collapse_check_every < 1:
            raise ValueError(f"collapse_check_every must be >= 1, got {self.collapse_check_every}")
        build_model_config(self)


def build_model_config(config: W2vBertConfig):
    """The named size with the ``model`` overrides applied."""
    from speechfm.config import named_config
    from speechfm.models import w2v_bert as wb

    sizes = {f"w2v_bert_{n}": getattr(wb, f"w2v_bert_{n}")
             for n in ("tiny", "small", "300m", "600m", "xl", "xxl")}
    replace = None
    if config.encoder_from_init:
        from speechfm.models.io import read_encoder_config

        if not config.init_from:
            raise ValueError("encoder_from_init needs init_from")
        replace = {"encoder": read_encoder_config(config.init_from)}
    return named_config(sizes, config.model_size, config.model, replace=replace)


def validate_ssl(model, cuts, *, ctx, seed: int, max_duration: float) -> dict[str, float]:
    """Dev pretraining loss and accuracies (masks and distractors from a seeded generator,
    so every validation sees the same ones and the global RNG is untouched)."""
    import torch

    from speechfm.data.dataset import iterate_batches
    from speechfm.train.distributed import all_reduce_sum

    generator = torch.Generator().manual_seed(seed)
    keys = ("contrastive_loss", "mlm_loss", "contrastive_acc", "mlm_acc", "code_perplexity",
            "used_fraction")
    sums = torch.zeros(2 + len(keys), dtype=torch.float64)
    for batch in iterate_batches(cuts, model.encoder.fbank.config, max_duration=max_duration,
                                 world_size=ctx.info.world_size, rank=ctx.info.rank):
        if not batch["cut_ids"]:
            continue
        loss, count, stats = model(batch, generator=generator)
        sums[0] += float(loss)
        sums[1] += count
        for i, key in enumerate(keys):
            sums[2 + i] += stats[key]
    if ctx.info.world_size > 1:
        all_reduce_sum(sums)
    n = max(float(sums[1]), 1.0)
    return {"loss": float(sums[0]) / n, "count": float(sums[1]),
            **{key: float(sums[2 + i]) / n for i, key in enumerate(keys)}}


def train(config: W2vBertConfig, *, resume: bool = False):
    """Pretrain and export; returns the :class:`speechfm.train.RunResult`."""
    from speechfm.models.w2v_bert import create_w2v_bert_model
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    model_config = build_model_config(config)
    model = create_w2v_bert_model(model_config)
    if config.cmvn:
        model.encoder.load_cmvn(config.cmvn)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None

    def loss_fn(net, batch, ctx):
        out = net(batch, step=ctx.state.step)
        if ctx.info.is_main and ctx.state.step % config.collapse_check_every == 0:
            warning = model.codebook_warning()
            if warning:
                log.warning("step %d: %s", ctx.state.step, warning)
        return out

    def validate(net, ctx):
        return validate_ssl(net, dev_cuts, ctx=ctx, seed=config.seed,
                            max_duration=config.max_duration)

    return run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None, metric="loss",
        summary={"model_size": config.model_size},
        resume=resume,
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, W2vBertConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
