"""Transducer (RNN-T) training losses: the pruned loss with its warm-up schedule, and the full loss.

Pruned (Kuang et al. 2022, as in icefall's pruned_transducer_stateless recipes)::

    simple, (px_grad, py_grad) = rnnt_loss_smoothed(simple_am_proj(enc), simple_lm_proj(pred), ...)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, ..., s_range=prune_range)
    enc_p, pred_p = do_rnnt_pruning(joiner.encoder_proj(enc), joiner.decoder_proj(pred), ranges)
    pruned = rnnt_loss_pruned(joiner(enc_p, pred_p, project_input=False), ...)
    loss = simple_scale * simple + pruned_scale * pruned            # see loss_scales()

The simple (additive-joiner) loss costs O(N T U) memory and trains the encoder and predictor
to put their probability mass on a narrow band of the lattice; the real joiner is then
evaluated on ``prune_range`` symbol positions per frame only, (N, T, R, V) instead of
(N, T, U + 1, V). Early in training the band is poor, so the pruned loss starts with a
small weight (:func:`loss_scales`).

Full: the joiner over the whole lattice and :func:`speechfm.ops.rnnt_loss` (exact, memory
hungry; for small vocabularies, tests and references).

Losses are computed in float32 (float64 for float64 inputs) whatever autocast says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from speechfm.errors import DataError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "TransducerLossConfig",
    "TransducerLossOutput",
    "check_transducer_batch",
    "loss_scales",
    "transducer_loss",
]

LOSS_KINDS = ("pruned", "full")
_BACKENDS = ("auto", "extension", "torch")


@dataclass(kw_only=True)
class TransducerLossConfig:
    """How a transducer is trained: pruned (default) or full RNN-T loss, and their weights."""

    kind: str = "pruned"
    """"pruned" (simple loss + pruned RNN-T loss) or "full" (RNN-T loss over the whole lattice)."""
    prune_range: int = 5
    """Pruned: symbol positions kept per frame (R, >= 2); an utterance needs U <= (R - 1) T."""
    lm_scale: float = 0.25
    """Pruned: weight of the predictor-only log-probs smoothed into the simple loss."""
    am_scale: float = 0.0
    """Pruned: weight of the encoder-only log-probs smoothed into the simple loss."""
    simple_loss_scale: float = 0.5
    """Pruned: weight of the simple loss once warm-up is over (it starts at 1.0)."""
    pruned_start_scale: float = 0.1
    """Pruned: weight of the pruned loss at step 0 (it reaches 1.0 at ``warm_steps``)."""
    warm_steps: int = 2000
    """Pruned: steps over which both weights move linearly to their final values (0 = none)."""
    ctc_scale: float = 0.0
    """Weight of an auxiliary CTC loss on the encoder output (0 = none; needs a model with
    ``ctc_head``). It gives the encoder a direct alignment signal from the first step, which
    the transducer losses reach only through the joiner (icefall uses 0.2 with --use-ctc)."""
    clamp: float = 0.0
    """If > 0, clamp each element of the RNN-T loss' gradient w.r.t. the logits to +-clamp."""
    zero_infinity: bool = True
    """Utterances with an infinite loss (targets that cannot fit the pruned band) add 0 and
    are counted; False lets the summed loss become inf."""
    backend: str = "auto"
    """RNN-T kernels: "auto" (compiled, fall back to PyTorch), "extension" or "torch"."""
    first_pass_scale: float = 0.5
    """Cascaded encoders: weight of the loss on the first (causal, streaming) encoder's
    output; the final (cascaded) pass is weighted ``final_pass_scale``. One encoder: unused."""
    final_pass_scale: float = 1.0
    """Cascaded encoders: weight of the loss on the second (full-context) encoder's output."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.prune_range < 2:
            raise ValueError(f"prune_range must be >= 2, got {self.prune_range}")
        if self.lm_scale < 0 or self.am_scale < 0 or self.lm_scale + self.am_scale > 1:
            raise ValueError(
                f"lm_scale and am_scale must be >= 0 with a sum <= 1, got {self.lm_scale} and "
                f"{self.am_scale}"
            )
        for name in ("simple_loss_scale", "pruned_start_scale", "ctc_scale", "clamp",
                     "first_pass_scale", "final_pass_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warm_steps < 0:
            raise ValueError(f"warm_steps must be >= 0, got {self.warm_steps}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-serialisable) dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransducerLossConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TransducerLossConfig fields: {unknown}")
        config = cls(**data)
        config.validate()
        return config


def loss_scales(step: int, config: TransducerLossConfig) -> tuple[float, float]:
    """Weights (simple, pruned) of the two pruned-training losses at training ``step``.

    The simple loss' weight goes linearly from 1.0 at step 0 to ``simple_loss_scale`` at
    ``warm_steps``, the pruned loss' from ``pruned_start_scale`` to 1.0; both are constant
    afterwards. (The pruned band is meaningless until the simple loss has trained a little.)
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if config.warm_steps == 0 or step >= config.warm_steps:
        return float(config.simple_loss_scale), 1.0
    frac = step / config.warm_steps
    simple = 1.0 + frac * (config.simple_loss_scale - 1.0)
    pruned = config.pruned_start_scale + frac * (1.0 - config.pruned_start_scale)
    return simple, pruned


@dataclass
class TransducerLossOutput:
    """What :func:`transducer_loss` computed."""

    loss: torch.Tensor
    """Scalar: the weighted losses summed over the utterances that count."""
    per_utt: torch.Tensor
    """(N,) weighted loss per utterance (inf for an infeasible one), detached."""
    finite: torch.Tensor
    """bool (N,): the utterances in ``loss``."""
    simple: torch.Tensor | None
    """(N,) simple (smoothed) loss per utterance, detached; None for kind "full"."""
    pruned: torch.Tensor | None
    """(N,) pruned RNN-T loss per utterance, detached; None for kind "full"."""
    full: torch.Tensor | None
    """(N,) full RNN-T loss per utterance, detached; None for kind "pruned"."""
    simple_scale: float
    """Weight the simple loss had (0 for kind "full")."""
    pruned_scale: float
    """Weight the pruned (or full) loss had."""


def _name(i: int, utt_ids: Sequence[str] | None) -> str:
    return f"utterance {utt_ids[i]!r}" if utt_ids is not None else f"utterance {i} of the batch"


def check_transducer_batch(
    enc_lens: torch.Tensor,
    targets: torch.Tensor,
    y_lens: torch.Tensor,
    *,
    num_frames: int,
    vocab_size: int,
    blank_id: int = 0,
    utt_ids: Sequence[str] | None = None,
) -> None:
    """Check a batch before a transducer loss; errors name the utterance.

    Args:
        enc_lens: int (N,) encoder frames per utterance (each in [1, num_frames]).
        targets: int (N, U) padded token ids; valid ones in [0, V) and not the blank.
        y_lens: int (N,) target lengths in [0, U].
        num_frames: T of the encoder output.
        vocab_size: V.
        blank_id: the blank's id.
        utt_ids: utterance names for the messages.

    Raises:
        DataError (a ValueError).
    """
    n = enc_lens.shape[0]
    if utt_ids is not None and len(utt_ids) != n:
        raise DataError(f"got {len(utt_ids)} utterance ids for a batch of {n}")
    if targets.dim() != 2 or targets.shape[0] != n or y_lens.shape != (n,):
        raise DataError(
            f"targets must be (N, U) and y_lens (N,) with N = {n}, got {tuple(targets.shape)} "
            f"and {tuple(y_lens.shape)}"
        )
    for name, t in (("enc_lens", enc_lens), ("targets", targets), ("y_lens", y_lens)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"{name} must be an integer tensor, got {t.dtype}")
    lens = enc_lens.long().cpu()
    for i in range(n):
        if lens[i] < 1:
            raise DataError(
                f"{_name(i, utt_ids)} has {int(lens[i])} encoder frames: too short for the "
                "encoder's front end (drop it, or pad the audio)"
            )
        if lens[i] > num_frames:
            raise DataError(
                f"{_name(i, utt_ids)}: enc_lens {int(lens[i])} exceeds the {num_frames} frames "
                "of the encoder output"
            )
    u_max = targets.shape[1]
    ylens = y_lens.long().cpu()
    bad = (ylens < 0) | (ylens > u_max)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DataError(f"{_name(i, utt_ids)}: y_lens {int(ylens[i])} outside [0, {u_max}]")
    if u_max:
        y = targets.long().cpu()
        used = torch.arange(u_max)[None, :] < ylens[:, None]
        for mask, what in (
            (used & (y == blank_id), f"contains the blank id {blank_id}"),
            (used & ((y < 0) | (y >= vocab_size)), f"has ids outside [0, {vocab_size})"),
        ):
            if bool(mask.any()):
                i = int(mask.any(1).nonzero()[0, 0])
                raise DataError(f"{_name(i, utt_ids)}: target {y[i, : ylens[i]].tolist()} {what}")


def _acc(costs: torch.Tensor) -> torch.Tensor:
    return costs if costs.dtype == torch.float64 else costs.float()


def transducer_loss(
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    targets: torch.Tensor,
    y_lens: torch.Tensor,
    *,
    predictor: nn.Module,
    joiner: nn.Module,
    simple_am_proj: nn.Module | None = None,
    simple_lm_proj: nn.Module | None = None,
    config: TransducerLossConfig,
    step: int,
    blank_id: int = 0,
    utt_ids: Sequence[str] | None = None,
) -> TransducerLossOutput:
    """Transducer loss of a batch of encoder outputs, summed over utterances.

    Args:
        enc: (N, T, C) encoder output.
        enc_lens: int64 (N,) valid frames (each >= 1).
        targets: int (N, U) padded token ids (padding may hold anything).
        y_lens: int64 (N,) target lengths.
        predictor: ``predictor(y (N, U + 1)) -> (N, U + 1, D)`` on blank-prefixed targets
            (a :class:`~speechfm.models.transducer.StatelessPredictor`).
        joiner: a :class:`~speechfm.models.transducer.Joiner` (``encoder_proj``,
            ``decoder_proj``, ``forward(enc, dec, project_input=...)``).
        simple_am_proj: (C -> V) projection for the simple loss (kind "pruned" only).
        simple_lm_proj: (D -> V) projection for the simple loss (kind "pruned" only).
        config: the loss settings.
        step: training step (for :func:`loss_scales`).
        blank_id: the blank's id.
        utt_ids: utterance names for error messages.

    Returns:
        A :class:`TransducerLossOutput`; its ``loss`` is float32 (float64 for float64 input).
    """
    config.validate()
    from speechfm.ops import (
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        rnnt_loss,
        rnnt_loss_pruned,
        rnnt_loss_smoothed,
    )

    if enc.dim() != 3:
        raise ValueError(f"enc must be (N, T, C), got shape {tuple(enc.shape)}")
    vocab = joiner.output_linear.out_features
    check_transducer_batch(
        enc_lens,
        targets,
        y_lens,
        num_frames=enc.shape[1],
        vocab_size=vocab,
        blank_id=blank_id,
        utt_ids=utt_ids,
    )
    dev = enc.device
    n, u_max = targets.shape
    enc_lens = enc_lens.to(dev, torch.int64)
    y_lens = y_lens.to(dev, torch.int64)
    used = torch.arange(u_max, device=dev)[None, :] < y_lens[:, None]
    y = targets.to(dev, torch.int64).masked_fill(~used, blank_id)
    sos_y = torch.cat((y.new_full((n, 1), blank_id), y), dim=1)  # (N, U + 1)
    pred = predictor(sos_y)  # (N, U + 1, D): the state after u labels

    simple = pruned = full = None
    if config.kind == "full":
        simple_scale, pruned_scale = 0.0, 1.0
        logits = joiner(enc.unsqueeze(2), pred.unsqueeze(1))  # (N, T, U + 1, V)
        full = _acc(
            rnnt_loss(
                logits,
                y,
                enc_lens,
                y_lens,
                blank=blank_id,
                reduction="none",
                clamp=config.clamp,
                backend=config.backend,
            )
        )
        per_utt = full
    else:
        if simple_am_proj is None or simple_lm_proj is None:
            raise ValueError("the pruned loss needs simple_am_proj and simple_lm_proj")
        simple_scale, pruned_scale = loss_scales(step, config)
        simple, (px_grad, py_grad) = rnnt_loss_smoothed(
            simple_am_proj(enc),
            simple_lm_proj(pred),
            y,
            enc_lens,
            y_lens,
            blank=blank_id,
            lm_only_scale=config.lm_scale,
            am_only_scale=config.am_scale,
            reduction="none",
            return_grad=True,
            backend=config.backend,
        )
        simple = _acc(simple)
        ranges = get_rnnt_prune_ranges(
            px_grad, py_grad, enc_lens, y_lens, s_range=config.prune_range
        )
        enc_p, pred_p = do_rnnt_pruning(joiner.encoder_proj(enc), joiner.decoder_proj(pred), ranges)
        logits = joiner(enc_p, pred_p, project_input=False)  # (N, T, R, V)
        pruned = _acc(
            rnnt_loss_pruned(
                logits,
                y,
                ranges,
                enc_lens,
                y_lens,
                blank=blank_id,
                reduction="none",
                clamp=config.clamp,
                backend=config.backend,
            )
        )
        per_utt = simple_scale * simple + pruned_scale * pruned

    finite = torch.isfinite(per_utt)
    if config.zero_infinity:
        # where(), not multiplication: 0 * inf would be NaN (the ops give an infeasible
        # utterance a zero gradient already).
        loss = torch.where(finite, per_utt, per_utt.new_zeros(())).sum()
    else:
        loss = per_utt.sum()
    return TransducerLossOutput(
        loss=loss,
        per_utt=per_utt.detach(),
        finite=finite,
        simple=None if simple is None else simple.detach(),
        pruned=None if pruned is None else pruned.detach(),
        full=None if full is None else full.detach(),
        simple_scale=simple_scale,
        pruned_scale=pruned_scale,
    )
