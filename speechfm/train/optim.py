"""Optimizer construction: Adam/AdamW with weight decay kept off norms, biases and scales.

Decaying a LayerNorm gain or a bias towards zero only hurts (it is not a capacity
regulariser for those), so the usual practice (BERT, wav2vec2, nanoGPT) applies weight
decay to matrices and convolution kernels only. :func:`param_groups` does that split and
:func:`create_optimizer` builds the optimizer from an :class:`OptimizerConfig`.

Fine-tuning a pretrained encoder (wav2vec 2.0 / w2v-BERT / data2vec style) adds three
tools, all by parameter name:

* :func:`freeze_parameters` - parameters under some prefixes never train;
* :func:`layer_lr_scales` - layer-wise learning-rate decay over the conformer blocks,
  which :func:`param_groups` turns into groups of their own learning rate;
* :func:`hold_parameters` - parameters that take no update while a condition holds
  (the encoder during the first updates of a fine-tuning run).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "OptimizerConfig",
    "create_optimizer",
    "freeze_parameters",
    "hold_parameters",
    "layer_lr_scales",
    "param_groups",
]

ENCODER_BLOCK = re.compile(r"^encoder\.conformer\.blocks\.(\d+)\.")
"""Names of the parameters of conformer block ``i`` (group 1) of every model's encoder."""
ENCODER_FRONT_END = "encoder.conformer.front_end."
"""Name prefix of the encoder's front end (subsampling / patch embedding)."""

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # Custom norms (e.g. a project ScaledLayerNorm) are caught by name.
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


@dataclass(kw_only=True)
class OptimizerConfig:
    """Settings of an Adam-family optimizer."""

    kind: str = "adamw"
    """``"adamw"`` (decoupled weight decay) or ``"adam"`` (L2 penalty added to the gradient)."""
    lr: float = 1e-3
    """Peak learning rate; schedulers scale it by a factor in [0, 1]."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam moment decay rates (beta1, beta2)."""
    eps: float = 1e-8
    """Adam denominator epsilon."""
    weight_decay: float = 0.01
    """Weight decay applied to the decayed group (matrices and conv kernels)."""
    no_decay: Sequence[str] = field(default_factory=tuple)
    """Extra parameter-name glob patterns kept out of weight decay (e.g. ``"*.pos_bias_u"``)."""
    fused: bool | None = None
    """Use the fused CUDA/CPU kernel; ``None`` lets torch choose."""

    def validate(self) -> None:
        if self.kind not in ("adamw", "adam"):
            raise ValueError(f"optimizer kind must be 'adamw' or 'adam', got {self.kind!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def layer_lr_scales(names: Iterable[str], decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (BEiT / data2vec / ESPnet fine-tuning) by name.

    With ``L`` conformer blocks (``L`` = 1 + the largest ``i`` of the names
    ``encoder.conformer.blocks.<i>.*``; ``i`` counts from 0 at the input):

    * ``encoder.conformer.blocks.<i>.*`` get ``decay ** (L - i)``: the last block
      ``decay``, the first ``decay ** L``;
    * ``encoder.conformer.front_end.*`` gets ``decay ** (L + 1)``;
    * everything else gets 1: the heads (``head.*``, ``predictor.*``, ``joiner.*``, ...),
      ``encoder.conformer.final_norm.*`` (BEiT's "rest") and any other parameter.

    Args:
        names: all parameter names of the model (frozen ones included, so that freezing
            does not shift the scales).
        decay: the factor per layer, in (0, 1]; 1 gives every name the scale 1.

    Returns:
        ``{name: scale}`` for every name.

    Raises:
        ValueError: ``decay`` outside (0, 1], or ``decay < 1`` with no encoder block.
    """
    names = list(names)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer lr decay must be in (0, 1], got {decay}")
    blocks = {name: int(m.group(1)) for name in names if (m := ENCODER_BLOCK.match(name))}
    if decay == 1.0:
        return dict.fromkeys(names, 1.0)
    if not blocks:
        raise ValueError("layer-wise lr decay needs encoder blocks "
                         "(encoder.conformer.blocks.<i>.*) among the parameter names")
    num_layers = max(blocks.values()) + 1
    scales: dict[str, float] = {}
    for name in names:
        if name in blocks:
            scales[name] = decay ** (num_layers - blocks[name])
        elif name.startswith(ENCODER_FRONT_END):
            scales[name] = decay ** (num_layers + 1)
        else:
            scales[name] = 1.0
    return scales


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: Iterable[str] = (),
    freeze_prefixes: Sequence[str] = (),
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group (per lr scale).

    A parameter is kept out of weight decay when it belongs to a normalisation module
    (BatchNorm/LayerNorm/GroupNorm/RMSNorm or any module whose class name contains
    "norm"), is named ``*bias``, has fewer than 2 dimensions (gains, scales, scalar
    temperatures), or matches one of the ``no_decay`` glob patterns. Frozen parameters
    (``requires_grad=False``, or a name starting with one of ``freeze_prefixes``) are
    left out entirely. Shared (tied) parameters appear once.

    Args:
        model: the module to optimise (unwrapped or DDP/FSDP-wrapped).
        weight_decay: decay of the decayed group.
        no_decay: extra glob patterns over full parameter names.
        freeze_prefixes: names starting with one of these are left out.
        lr_scales: ``{name: factor of the peak lr}`` (e.g. :func:`layer_lr_scales`; a name
            missing gets 1). Given, every distinct scale makes its own decayed and
            non-decayed group carrying ``"lr_scale"``, largest scale first, so the first
            group has the peak rate.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "names": [...]},
        {"params": [...], "weight_decay": 0.0, "names": [...]}]`` (empty groups dropped),
        that pair once per scale (with ``"lr_scale"``) when ``lr_scales`` is given.
    """
    patterns = tuple(no_decay)
    prefixes = tuple(freeze_prefixes)
    norm_params: set[int] = set()
    for module in model.modules():
        if _is_norm(module):
            norm_params.update(id(p) for p in module.parameters(recurse=False))

    # (scale, decayed?) -> (params, names); dicts keep first-seen order.
    buckets: dict[tuple[float, bool], tuple[list[nn.Parameter], list[str]]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen or name.startswith(prefixes):
            continue
        seen.add(id(param))
        excluded = (
            id(param) in norm_params
            or name.endswith("bias")
            or param.ndim < 2
            or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        )
        scale = 1.0 if lr_scales is None else float(lr_scales.get(name, 1.0))
        params, names = buckets.setdefault((scale, not excluded), ([], []))
        params.append(param)
        names.append(name)
    groups: list[dict[str, Any]] = []
    scales = sorted({scale for scale, _ in buckets}, reverse=True) or [1.0]
    for scale in scales:
        for decayed in (True, False):
            params, names = buckets.get((scale, decayed), ([], []))
            if not params:
                continue
            group = {"params": params, "weight_decay": float(weight_decay) if decayed else 0.0,
                     "names": names}
            if lr_scales is not None:
                group["lr_scale"] = scale
            groups.append(group)
    return groups


def freeze_parameters(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter whose name starts with a prefix.

    Call it before wrapping the model (DDP and FSDP then leave the frozen parameters out
    of their gradient reduction) and before building the optimizer.

    Returns:
        The names frozen, in model order.

    Raises:
        ValueError: a prefix names no parameter (a typo would otherwise freeze nothing).
    """
    prefixes = tuple(prefixes)
    frozen: list[str] = []
    used: set[str] = set()
    for name, param in model.named_parameters():
        hits = [p for p in prefixes if name.startswith(p)]
        if hits:
            used.update(hits)
            param.requires_grad_(False)
            frozen.append(name)
    unused = [p for p in prefixes if p not in used]
    if unused:
        raise ValueError(f"freeze prefixes {unused} match no parameter of {type(model).__name__}")
    return frozen


def keep_frozen_in_eval(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Keep the submodules that ``prefixes`` freeze whole in eval mode, whatever
    ``model.train()`` says: a frozen encoder (a linear probe, a frozen front end) must not
    apply dropout or update BatchNorm running statistics either, or it would not be the
    encoder it was.

    Returns:
        The names of those submodules (a forward pre-hook on ``model`` re-applies
        ``eval()`` to them before every forward).
    """
    prefixes = tuple(prefixes)
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or not any((name + ".").startswith(p) for p in prefixes):
            continue
        if any(name.startswith(n + ".") for n in names):
            continue  # inside a module already kept
        if all(not p.requires_grad for p in module.parameters()):
            names.append(name)
    modules = [model.get_submodule(n) for n in names]
    if modules:
        def hook(_module, _args):
            for sub in modules:
                if sub.training:
                    sub.eval()

        model.register_forward_pre_hook(hook)
    return names


def hold_parameters(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], active: Callable[[], bool]
) -> RemovableHandle:
    """Leave ``params`` out of every ``optimizer.step()`` taken while ``active()`` is true.

    A step pre-hook drops their gradients (``grad = None``) just before the update, and
    torch's Adam/AdamW (single-tensor, foreach and fused alike) skip a parameter without
    a gradient entirely: no weight decay, no moment update, no step count. The held
    parameters stay bit-identical, and the first update after the hold starts from a
    fresh Adam state, as if they had joined the optimizer then (fairseq's
    ``freeze_finetune_updates``, where the encoder runs under ``no_grad``).

    That fresh state is created here, up front (step 0, zero moments: what Adam's lazy
    initialisation makes, made by a step of the optimizer itself at lr 0 on zero
    gradients of ``params`` alone, then zeroed), so that every checkpoint taken during
    the hold holds a state for every trainable parameter, as strict loaders (torch's
    distributed ``set_optimizer_state_dict`` under FSDP) require. Call it after
    restoring a checkpoint into ``optimizer``: that loader fills in the state of every
    parameter only for an optimizer that has none yet.

    The gradients are still computed and reduced (DDP/FSDP see every parameter used, so
    nothing else changes for them), and a gradient norm clipped before the step still
    counts them. ``active`` is read at every step, so the hold follows a counter that a
    checkpoint restores (e.g. ``lambda: state.step < n``) and resumes exactly.

    Args:
        optimizer: an Adam or AdamW optimizer holding ``params``.
        params: the parameters to hold.
        active: ``() -> bool``, true while they are held.

    Returns:
        The hook's handle (``.remove()`` ends the hold for good).

    Raises:
        TypeError: another optimizer (its fresh state need not be zeros).
        ValueError: a parameter is not in the optimizer.
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        raise TypeError(f"hold_parameters needs Adam or AdamW, got {type(optimizer).__name__}")
    held = {id(p) for p in params}
    members = [p for group in optimizer.param_groups for p in group["params"] if id(p) in held]
    if len(members) != len(held):
        raise ValueError("hold_parameters: some parameters are not in the optimizer")
    _fresh_state(optimizer, [p for p in members if not optimizer.state.get(p)])

    def drop_grads(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if active():
            for param in members:
                param.grad = None

    return optimizer.register_step_pre_hook(drop_grads)


def _fresh_state(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
    """Create the Adam state of ``params`` as their first update would, moving nothing."""
    if not params:
        return
    chosen = {id(p) for p in params}
    grads = {id(p): p.grad for g in optimizer.param_groups for p in g["params"]}
    settings = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    try:
        for group in optimizer.param_groups:
            # Zero lr and decay: a zero gradient then adds -0.0 to each parameter (x + -0.0
            # is x, bit for bit, -0.0 included).
            group["lr"] = torch.zeros_like(group["lr"]) if torch.is_tensor(group["lr"]) else 0.0
            group["weight_decay"] = 0.0
            for p in group["params"]:
                p.grad = torch.zeros_like(p) if id(p) in chosen else None
        optimizer.step()
    finally:
        for group, (lr, decay) in zip(optimizer.param_groups, settings, strict=True):
            group["lr"], group["weight_decay"] = lr, decay
            for p in group["params"]:
                p.grad = grads[id(p)]
    with torch.no_grad():
        for p in params:
            for value in optimizer.state[p].values():
                if torch.is_tensor(value):
                    value.zero_()


def create_optimizer(
    model: nn.Module,
    config: OptimizerConfig,
    *,
    freeze_prefixes: Sequence[str] = (),
    layer_lr_decay: float = 1.0,
) -> torch.optim.Optimizer:
    """Build an Adam or AdamW optimizer over ``model`` with the norm/bias decay split.

    Args:
        model: the module to optimise (unwrapped or DDP/FSDP-wrapped).
        config: the optimizer settings.
        freeze_prefixes: parameter names left out (see :func:`param_groups`).
        layer_lr_decay: below 1, every group gets ``lr = config.lr * scale`` by
            :func:`layer_lr_scales` (and keeps its ``"lr_scale"``); schedulers multiply
            each group's own rate, so the ratios hold throughout the schedule.

    Raises:
        ValueError: when the config is invalid or the model has no trainable parameters.
    """
    config.validate()
    scales = None
    if layer_lr_decay != 1.0:
        scales = layer_lr_scales((n for n, _ in model.named_parameters()), layer_lr_decay)
    groups = param_groups(model, config.weight_decay, no_decay=config.no_decay,
                          freeze_prefixes=freeze_prefixes, lr_scales=scales)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimise")
    for group in groups:
        # Names serve inspection only; torch would otherwise carry them into every
        # optimizer state_dict.
        group.pop("names")
        if "lr_scale" in group:
            group["lr"] = config.lr * group["lr_scale"]
    cls = torch.optim.AdamW if config.kind == "adamw" else torch.optim.Adam
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": tuple(config.betas), "eps": config.eps}
    if config.fused is not None:
        kwargs["fused"] = config.fused
    return cls(groups, **kwargs)
