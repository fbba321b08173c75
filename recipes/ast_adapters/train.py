#!/usr/bin/env python3
"""Parameter-efficient transfer of spectrogram transformers (PETL-AST, Cappellazzo et al.
2024), plus full fine-tuning, a linear probe and training from scratch, for audio
classification (keyword spotting, digits, speaker identification).

    python recipes/ast_adapters/train.py CONFIG.yaml [--exp-dir DIR] [--resume]
        [--print-config] [key=value ...]

CONFIG holds the fields of :class:`AstAdaptersConfig`: the run's settings
(:class:`speechfm.train.RunConfig`), the classes (``labels``, or every label of the
training cuts), the backbone (``backbone``: an ``ast`` or ``asit`` model directory, e.g.
an ASiT-pretrained model or a converted AST checkpoint; or any directory holding the
shared Conformer front end (``classifier``, ``encoder``, ``ctc``, ``transducer``,
``w2v_bert``), whose encoder then starts a Conformer classifier; None = random weights of
``model_size``, i.e. training from scratch) and the method:

==============  =========================================================================
method          what trains (the classifier head, LayerNorm + Linear, always does)
==============  =========================================================================
full            every weight
linear          the head only (linear probe)
bitfit          every bias (BitFit)
adapter         bottleneck adapters: ``adapter_placement`` pfeiffer (after the MLP) or
                houlsby (after attention and MLP), ``adapter_mode`` sequential (on the
                sub-module's output) or parallel (reading its input), bottleneck
                ``max(adapter_min_bottleneck, dim // reduction_rate)``
conv_adapter    the Conformer-convolution adapter, same placements and size rule
lora            LoRA on W_q and W_v (``lora_rank``, ``lora_alpha``)
prompt          deep prompt tuning: ``num_prompts`` learned tokens prepended in every block
prefix          prefix tuning: ``num_prompts`` learned keys/values inside every attention
==============  =========================================================================

The methods work on both families: in a Conformer block Pfeiffer adapters follow the
second feed-forward module, Houlsby ones also the attention, parallel ones read the block
input (:func:`method_adapters`).  Defaults are the paper's code's: reduction rate 96 (for width 768; the bottleneck never
goes under 8), LoRA alpha 8, 25 prompts, learning rates 5e-3 (adapters, LoRA, BitFit,
linear), 1e-2 (prompts, prefixes), 5e-5 (full fine-tuning), AdamW betas (0.9, 0.98),
weight decay 0.1, cosine schedule.  Every adapter is a module of
:mod:`speechfm.nn.adapters` in the blocks' adapter slots: the same implementation the
ASR families use.  The run's ``train_summary.json`` records the trainable and total
parameter counts; the exported ``EXP/final`` is an ``ast`` or ``classifier`` model
directory with ``labels.json`` (``speechfm.load(EXP/final).classify(audio)``), adapters
included.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from speechfm.train import RunConfig
from speechfm.train.optim import OptimizerConfig
from speechfm.train.schedulers import SchedulerConfig

log = logging.getLogger("speechfm.recipes.ast_adapters")

METHODS = ("full", "linear", "bitfit", "adapter", "conv_adapter", "lora", "prompt", "prefix")
DEFAULT_LR = {"full": 5e-5, "linear": 5e-3, "bitfit": 5e-3, "adapter": 5e-3,
              "conv_adapter": 5e-3, "lora": 5e-3, "prompt": 1e-2, "prefix": 1e-2}
"""The paper's learning rates per method (``lr`` overrides)."""


@dataclass(kw_only=True)
class AstAdaptersConfig(RunConfig):
    """A classification run: :class:`RunConfig` plus labels, backbone, model and method."""

    labels: list[str] | None = None
    """Class labels in id order; None = the sorted distinct labels of ``train_cuts``."""
    label_field: str = "text"
    """What a cut's label is: its supervision "text" (keywords, digits) or "speaker"."""
    backbone: str | None = None
    """An ``ast`` or ``asit`` model directory whose spectrogram transformer starts the
    model (its architecture is taken from it; the positional grid is interpolated when
    ``model.target_frames`` differs), or a Conformer-based one (:data:`ENCODER_FAMILIES`)
    whose speech encoder starts a ``classifier``; None = random weights (from scratch)."""
    model_size: str = "ast_tiny"
    """Named size when there is no backbone: a spectrogram transformer (ast_mini, ast_tiny,
    ast_small, ast_base) or a Conformer classifier (classifier_tiny, classifier_kws,
    classifier_small; family ``classifier``)."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config (``{"target_frames": 100, "dropout": 0.1}``)."""
    method: str = "full"
    """One of: full, linear, bitfit, adapter, conv_adapter, lora, prompt, prefix."""
    lr: float | None = None
    """Peak learning rate; None = the method's default (:data:`DEFAULT_LR`)."""
    adapter_placement: str = "pfeiffer"
    """adapter / conv_adapter: "pfeiffer" (after the MLP) or "houlsby" (after attention and
    after the MLP)."""
    adapter_mode: str = "sequential"
    """adapter / conv_adapter: "sequential" or "parallel"."""
    reduction_rate: int = 96
    """adapter / conv_adapter: bottleneck = dim // reduction_rate (at least
    ``adapter_min_bottleneck``)."""
    adapter_min_bottleneck: int = 8
    """Smallest bottleneck (96 was chosen for width 768; small models need a floor)."""
    conv_kernel: int = 31
    """conv_adapter: depthwise kernel."""
    lora_rank: int = 8
    """lora: rank r."""
    lora_alpha: float = 8.0
    """lora: alpha (the update is scaled by alpha / r)."""
    num_prompts: int = 25
    """prompt / prefix: learned tokens (or key/value pairs) per block."""
    mixup: float = 0.0
    """Mixup of the training batches (features and targets, Beta(alpha, alpha) weights);
    0 = off."""
    time_shift: int = 0
    """Shift each training clip's features by a random number of frames in
    [-time_shift, time_shift] (circularly, within its valid frames); 0 = off."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=5e-3, betas=(0.9, 0.98), weight_decay=0.1))
    """AdamW settings (``lr`` is replaced by the recipe's ``lr`` / the method default)."""
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(kind="cosine", warmup_steps=100))
    """Cosine schedule with warm-up."""
    valid_every: int = 200
    """Validate every this many updates."""
    exp_dir: str = "exp/ast_adapters"
    """Output directory of the run."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.label_field not in ("text", "speaker"):
            raise ValueError(f"label_field must be text or speaker, got {self.label_field!r}")
        if self.adapter_placement not in ("pfeiffer", "houlsby"):
            raise ValueError(f"adapter_placement must be pfeiffer or houlsby, "
                             f"got {self.adapter_placement!r}")
        if self.adapter_mode not in ("sequential", "parallel"):
            raise ValueError(f"adapter_mode must be sequential or parallel, "
                             f"got {self.adapter_mode!r}")
        for name in ("reduction_rate", "adapter_min_bottleneck", "lora_rank", "num_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mixup < 0 or self.time_shift < 0:
            raise ValueError("mixup and time_shift must be >= 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        self.optimizer.lr = self.lr if self.lr is not None else DEFAULT_LR[self.method]
        super().validate()
        build_model_config(self, num_classes=2)


ENCODER_FAMILIES = ("classifier", "encoder", "ctc", "transducer", "w2v_bert")
"""Families whose shared Conformer front end (``encoder.*``) can start a ``classifier``."""


def backbone_config(directory: str) -> tuple[str, dict[str, Any]]:
    """(family of the model to build, its config dict) from a backbone directory: the
    spectrogram transformer of an ``ast`` or ``asit`` directory, or the speech encoder of a
    Conformer-based one (:data:`ENCODER_FAMILIES`) inside a ``classifier`` config."""
    from speechfm.errors import DataError
    from speechfm.models.io import read_model_config

    meta = read_model_config(directory)
    family, model = meta["family"], meta["model"]
    if family == "ast":
        return "ast", dict(model)
    if family == "asit" and isinstance(model.get("backbone"), dict):
        return "ast", dict(model["backbone"])
    if family == "classifier":
        return "classifier", dict(model)
    if family in ENCODER_FAMILIES and isinstance(model.get("encoder"), dict):
        return "classifier", {"encoder": dict(model["encoder"])}
    raise DataError(f"{directory}: a {family!r} model has no encoder to start from (need "
                    f"an ast or asit directory, or one of {', '.join(ENCODER_FAMILIES)})")


def model_sizes(num_classes: int) -> dict[str, Any]:
    """Named sizes of both families: ast_{mini,tiny,small,base} (spectrogram transformer)
    and classifier_{tiny,kws,small} (Conformer)."""
    from speechfm.models import ast, classifier

    sizes = {f"ast_{n}": partial(getattr(ast, f"ast_{n}"), num_classes)
             for n in ("mini", "tiny", "small", "base")}
    sizes.update({f"classifier_{n}": partial(getattr(classifier, f"classifier_{n}"), num_classes)
                  for n in ("tiny", "kws", "small")})
    return sizes


def build_model_config(config: AstAdaptersConfig, num_classes: int):
    """The named size (or the backbone's architecture) with the ``model`` overrides: an
    ``AstModelConfig`` or a ``ClassifierModelConfig``."""
    from speechfm.config import config_from_dict, named_config
    from speechfm.models.ast import AstModelConfig
    from speechfm.models.classifier import ClassifierModelConfig

    sizes = model_sizes(num_classes)
    name = config.model_size
    if config.backbone:
        family, base = backbone_config(config.backbone)
        base = {k: v for k, v in base.items() if k not in ("num_classes", "adapters")}
        base["num_classes"] = num_classes
        cls = AstModelConfig if family == "ast" else ClassifierModelConfig
        sizes = {"backbone": lambda: config_from_dict(cls, base)}
        name = "backbone"
    return named_config(sizes, name, config.model,
                        fixed={"num_classes": "it comes from the labels"})


def load_backbone(model, directory: str) -> int:
    """Copy the backbone's ``encoder.*`` weights into ``model`` (a spectrogram
    transformer's positional grid interpolated to the model's input size); returns the
    number of tensors copied.

    Raises:
        DataError: a weight the model needs is missing or has another shape.
    """
    import torch

    from speechfm.errors import DataError
    from speechfm.models.io import read_weights

    theirs = read_weights(directory)
    own = model.state_dict()
    family, src_cfg = backbone_config(directory)
    enc = model.encoder
    copied = 0
    with torch.no_grad():
        for key, value in own.items():
            if not key.startswith("encoder.") or ".adapters." in key:
                continue
            if key not in theirs:
                raise DataError(f"backbone {directory}: no weight {key}")
            src = theirs[key]
            if family == "ast" and key == "encoder.pos_embed" and src.shape != value.shape:
                from speechfm.models.ast import interpolate_positions

                frames = int(src_cfg.get("target_frames", 0))
                grid = enc._grid(frames)
                src = interpolate_positions(src, enc.num_special, grid, enc.grid)
                log.info("interpolated positions of %s from grid %s to %s", directory, grid,
                         enc.grid)
            if src.shape != value.shape:
                raise DataError(f"backbone {directory}: {key} has shape {tuple(src.shape)}, "
                                f"the model's is {tuple(value.shape)}")
            value.copy_(src.to(value.dtype))
            copied += 1
    return copied


def method_adapters(config: AstAdaptersConfig, dim: int, family: str = "ast"
                    ) -> list[dict[str, Any]]:
    """The adapters of ``config.method`` for a model of width ``dim``, as the model
    config's ``adapters`` entries (so the exported directory rebuilds them).

    In a Conformer block (``family`` "classifier") Pfeiffer placement is after the second
    (last) feed-forward module, Houlsby after the attention and that feed-forward module;
    parallel adapters read the block's input (the block has a single parallel point)."""
    method = config.method
    if method in ("adapter", "conv_adapter"):
        bottleneck = max(config.adapter_min_bottleneck, dim // config.reduction_rate)
        if family == "ast":
            subs = ("ffn",) if config.adapter_placement == "pfeiffer" else ("attn", "ffn")
            points = [f"after_{s}" if config.adapter_mode == "sequential" else f"parallel_{s}"
                      for s in subs]
        elif config.adapter_mode == "parallel":
            points = ["parallel"]
        else:
            points = (["after_ffn2"] if config.adapter_placement == "pfeiffer"
                      else ["after_attn", "after_ffn2"])
        if method == "adapter":
            return [{"name": "adapter", "kind": "bottleneck", "points": points,
                     "options": {"bottleneck": bottleneck}}]
        return [{"name": "conv_adapter", "kind": "conv", "points": points,
                 "options": {"bottleneck": bottleneck, "kernel": config.conv_kernel}}]
    if method == "lora":
        return [{"name": "lora", "kind": "lora", "points": ["attn_q", "attn_v"],
                 "options": {"rank": config.lora_rank, "alpha": config.lora_alpha}}]
    if method == "prompt":
        return [{"name": "prompt", "kind": "prompt", "points": ["prompt"],
                 "options": {"num_prompts": config.num_prompts}}]
    if method == "prefix":
        return [{"name": "prefix", "kind": "prefix", "points": ["prefix"],
                 "options": {"num_prefixes": config.num_prompts}}]
    return []


def set_trainable(model, method: str) -> dict[str, int]:
    """``requires_grad`` as ``method`` says (the head always trains); returns the
    trainable and total parameter counts."""
    from speechfm.nn.adapters import count_parameters, freeze_all_but_adapters

    if method != "full":
        freeze_all_but_adapters(model)
        for p in model.head.parameters():
            p.requires_grad_(True)
        if method == "bitfit":
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.requires_grad_(True)
    return {"trainable_parameters": count_parameters(model, trainable_only=True),
            "total_parameters": count_parameters(model)}


def augment(feats, x_lens, targets, num_classes: int, gen, *, mixup: float, time_shift: int):
    """Random circular time shift of each clip's valid frames, then mixup of the batch with
    a shuffled copy of itself (valid frames: the longer of the two); returns (features,
    x_lens, int or soft targets)."""
    import torch

    feats = feats.clone()
    if time_shift:
        shifts = torch.randint(-time_shift, time_shift + 1, (feats.shape[0],), generator=gen)
        for i, (n, s) in enumerate(zip(x_lens.tolist(), shifts.tolist(), strict=True)):
            if n > 1 and s:
                feats[i, :n] = torch.roll(feats[i, :n], s, dims=0)
    if not mixup:
        return feats, x_lens, targets
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(targets), num_classes).float()
    import numpy as np

    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    lam = torch.from_numpy(rng.beta(mixup, mixup, size=feats.shape[0])).float()
    lam = torch.maximum(lam, 1 - lam)  # each row stays mostly itself
    perm = torch.randperm(feats.shape[0], generator=gen)
    x_lens = torch.maximum(x_lens, x_lens[perm])
    feats = lam[:, None, None] * feats + (1 - lam[:, None, None]) * feats[perm]
    return feats, x_lens, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[perm]


def train(config: AstAdaptersConfig, *, resume: bool = False):
    """Train and export; returns the :class:`speechfm.train.RunResult`."""
    import torch

    from speechfm.data.subsets import label_counts
    from speechfm.decode.classification import cut_label, evaluate_classifier, label_ids
    from speechfm.models.io import get_family
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    train_cuts = load_cuts(config.train_cuts).to_eager()
    labels = list(config.labels) if config.labels else sorted(
        {cut_label(c, config.label_field) for c in train_cuts})
    if len(labels) < 2:
        raise ValueError(f"{config.train_cuts}: need at least two classes, found {labels}")
    model_config = build_model_config(config, num_classes=len(labels))
    family = model_config.family
    dim = model_config.dim if family == "ast" else model_config.encoder.conformer.dim
    model_config.adapters = model_config.adapters + method_adapters(config, dim, family)
    model_config.validate()
    model = get_family(family).create(model_config)
    if config.backbone:
        log.info("backbone: %d tensors from %s", load_backbone(model, config.backbone),
                 config.backbone)
    counts = set_trainable(model, config.method)
    log.info("method %s: %d trainable of %d parameters (%.2f %%)", config.method,
             counts["trainable_parameters"], counts["total_parameters"],
             100.0 * counts["trainable_parameters"] / counts["total_parameters"])
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None
    field_name = "texts" if config.label_field == "text" else "speakers"

    def loss_fn(net, batch, ctx):
        values = [str(v).strip() if v else "" for v in batch[field_name]]
        targets = label_ids(values, labels, batch["cut_ids"])
        feats, x_lens = batch["features"], batch["x_lens"]
        if (config.mixup or config.time_shift) and feats.shape[0]:
            # Drawn from (seed, step): a resumed run augments exactly as it would have.
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.state.step)
            feats, x_lens, targets = augment(feats, x_lens, targets, len(labels), gen,
                                             mixup=config.mixup, time_shift=config.time_shift)
        return net(dict(batch, features=feats, x_lens=x_lens, targets=targets))

    def validate(model, ctx):
        return evaluate_classifier(model, dev_cuts, labels, label_field=config.label_field,
                                   device=ctx.device, max_duration=config.max_duration,
                                   world_size=ctx.info.world_size, rank=ctx.info.rank)

    return run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None,
        metric="accuracy", higher_is_better=True,
        parts={"labels": labels},
        find_unused_parameters=config.method != "full",
        summary={**counts, "method": config.method, "labels": labels,
                 "train_label_counts": label_counts(train_cuts)
                 if config.label_field == "text" else None,
                 "backbone": config.backbone, "model_size": config.model_size},
        resume=resume,
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, AstAdaptersConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
