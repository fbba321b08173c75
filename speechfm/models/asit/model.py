"""ASiT pretraining model: a spectrogram transformer with global and local DINO heads and a
reconstruction head, trained against an EMA teacher.

::

    clip fbank -> V views (random time shift / crop, random gain)          [make_views]
       view --normalise--> x --GMML (mask cells, fill noise)--> student backbone
                           |                                      |-- pooled -> global head  ~ teacher global (other views)
                           |                                      |-- masked patches -> local head ~ teacher local (same view)
                           |                                      '-- every patch -> recon head -> fold -> |. - x|_1 on masked elements
       view --normalise--> x --(clean)--> teacher backbone (EMA of the student, no gradient)

The family contract (:mod:`speechfm.models.io`): ``model(batch, teacher=, step=)`` is the
pretraining loss (per clip), ``encode`` the plain encoder (``embed``, fine-tuning: the
backbone is ``model.encoder``, so ``init_from`` with ``init_prefixes: [encoder.]`` moves it
into an ``ast`` classifier). The teacher is :class:`AsitTeacher` (the recipe passes it in
and checkpoints it); the centres of its global and local outputs are buffers of the
student model (``global_center``, ``local_center``), so every checkpoint and the export
hold them.

The global head reads the backbone's pooled embedding (its ``pooling``: ``cls`` = the CLS
token as in ASiT, ``cls_dist`` = the mean of CLS and distillation tokens), i.e. exactly
the vector an ``ast`` classifier fine-tuned from the backbone classifies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.losses.distill import (
    global_distillation_loss,
    local_distillation_loss,
    masked_l1_loss,
    teacher_entropy,
    teacher_temperature,
    update_center,
)
from speechfm.models.asit.masking import fill_masked, gmml_mask, patch_mask
from speechfm.models.ast.model import SpectrogramTransformer

__all__ = ["AsitModel", "AsitTeacher", "DinoHead", "create_asit_model", "fold_patches", "make_views"]


# ------------------------------------------------------------------------------ views


def make_views(
    feats: torch.Tensor,
    x_lens: torch.Tensor,
    *,
    frames: int,
    num_views: int = 2,
    max_shift: int = 20,
    gain_db: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Views of each clip, all ``frames`` long, in the fbank domain.

    View v of clip n holds frames ``[a, a + frames)`` of the clip, ``a`` = a random crop
    start in ``[0, max(L - frames, 0)]`` plus a random shift in ``[-max_shift, max_shift]``
    (kept so that at least one frame of the clip is in the view); frames outside the
    clip are zero fbank (what the backbone pads with). A random gain, uniform in
    ``+-gain_db`` dB, is added to the clip's log-mel values (``g * ln(10) / 10``).

    Args:
        feats: (N, T, F) fbank; x_lens: (N,) valid frames.

    Returns:
        (V * N, frames, F) views, view-major (view 0 of every clip first).
    """
    n, t, f = feats.shape
    v = num_views
    lens = x_lens.to(torch.int64).cpu().clamp(min=1, max=t).repeat(v)
    u = torch.rand(v * n, 3, generator=generator, dtype=torch.float64)
    span = (lens - frames).clamp(min=0)
    crop = (u[:, 0] * (span + 1).to(torch.float64)).floor().to(torch.int64).clamp(max=span)
    shift = (u[:, 1] * (2 * max_shift + 1)).floor().to(torch.int64) - max_shift
    start = torch.minimum(torch.maximum(crop + shift, 1 - torch.full_like(lens, frames)),
                          lens - 1)
    gain = (u[:, 2] * 2 - 1) * gain_db * math.log(10) / 10
    index = start[:, None] + torch.arange(frames)[None, :]
    valid = (index >= 0) & (index < lens[:, None])
    device = feats.device
    index, valid = index.clamp(0, t - 1).to(device), valid.to(device)
    src = feats.repeat(v, 1, 1)
    out = torch.gather(src, 1, index[:, :, None].expand(-1, -1, f))
    out = (out + gain.to(device=device, dtype=feats.dtype)[:, None, None])
    return out * valid[:, :, None].to(feats.dtype)


def fold_patches(patches: torch.Tensor, size: tuple[int, int], patch: tuple[int, int],
                 stride: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping patch predictions back onto the input grid.

    Args:
        patches: (N, P, patch_t * patch_f) values, patches time-major, each patch's values
            time-major (frame by frame).
        size: (T, F) of the input.

    Returns:
        (N, T, F) mean of the predictions covering each element, and bool (T, F): covered
        by at least one patch (the last frames/bins may lie outside every patch).
    """
    cols = patches.transpose(1, 2)
    total = F.fold(cols, size, kernel_size=patch, stride=stride)
    ones = torch.ones_like(cols[:1])
    count = F.fold(ones, size, kernel_size=patch, stride=stride)
    covered = count[0, 0] > 0
    return (total / count.clamp(min=1))[:, 0], covered


# ------------------------------------------------------------------------------ heads


class DinoHead(nn.Module):
    """DINO projection head: MLP (GELU) -> L2-normalised bottleneck -> weight-normalised
    linear layer to K prototypes (unit-norm rows, DINO's ``norm_last_layer``; no bias).

    Shapes: (..., C) -> (..., K).
    """

    def __init__(self, in_dim: int, num_prototypes: int, *, hidden_dim: int = 512,
                 bottleneck_dim: int = 128, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        # The weight's direction only: g fixed at 1 (weight normalisation with norm_last_layer).
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # rows of norm ~1, so the normalisation does not scale their gradient up
        nn.init.trunc_normal_(self.prototypes, std=bottleneck_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))


# ------------------------------------------------------------------------------ model


class AsitModel(nn.Module):
    """Spectrogram transformer + global / local DINO heads + reconstruction head.

    Args:
        encoder: the backbone (``model.encoder``).
        pooling: the backbone's pooling ("cls_dist", "cls" or "mean") for the global head.
        head_hidden_dim, head_bottleneck_dim, head_layers: both DINO heads.
        num_prototypes, local_num_prototypes: K of the global / local head.
        mask_shape, mask_fill, min_fraction, max_fraction, max_block_fraction,
            patch_threshold: GMML (:mod:`speechfm.models.asit.masking`).
        num_views, max_shift, gain_db: :func:`make_views`.
        global_weight, local_weight, recon_weight: loss weights (0 = term not computed).
        student_temperature, teacher_temperature_start, teacher_temperature,
            teacher_temperature_warmup_steps, center_momentum: :mod:`speechfm.losses.distill`.
    """

    def __init__(
        self,
        encoder: SpectrogramTransformer,
        *,
        pooling: str = "cls_dist",
        head_hidden_dim: int = 512,
        head_bottleneck_dim: int = 128,
        head_layers: int = 3,
        num_prototypes: int = 1024,
        local_num_prototypes: int = 1024,
        mask_shape: str = "block",
        mask_fill: str = "noise",
        min_fraction: float = 0.5,
        max_fraction: float = 0.7,
        max_block_fraction: float = 0.3,
        patch_threshold: float = 0.5,
        num_views: int = 2,
        max_shift: int = 20,
        gain_db: float = 6.0,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        recon_weight: float = 2.0,
        student_temperature: float = 0.1,
        teacher_temperature_start: float = 0.04,
        teacher_temperature: float = 0.07,
        teacher_temperature_warmup_steps: int = 100,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        dim = encoder.dim
        head = dict(hidden_dim=head_hidden_dim, bottleneck_dim=head_bottleneck_dim,
                    num_layers=head_layers)
        self.global_head = DinoHead(dim, num_prototypes, **head)
        self.local_head = DinoHead(dim, local_num_prototypes, **head)
        self.patch = tuple(encoder.patch_embed.patch)
        self.stride = tuple(encoder.patch_embed.stride)
        self.recon_head = nn.Linear(dim, self.patch[0] * self.patch[1])
        self.register_buffer("global_center", torch.zeros(1, num_prototypes))
        self.register_buffer("local_center", torch.zeros(1, local_num_prototypes))
        self.masking = dict(shape=mask_shape, min_fraction=min_fraction,
                            max_fraction=max_fraction, max_block_fraction=max_block_fraction)
        self.mask_fill = mask_fill
        self.patch_threshold = patch_threshold
        self.views = dict(num_views=num_views, max_shift=max_shift, gain_db=gain_db)
        self.weights = {"global": global_weight, "local": local_weight, "recon": recon_weight}
        self.student_temperature = student_temperature
        self.teacher_temperatures = dict(warmup_steps=teacher_temperature_warmup_steps,
                                         start=teacher_temperature_start, end=teacher_temperature)
        self.center_momentum = center_momentum

    # ------------------------------------------------------------------ inference

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """The backbone without masking: :meth:`SpectrogramTransformer.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def pool(self, seq: torch.Tensor) -> torch.Tensor:
        """(N, S + P, C) final sequence -> (N, C) pooled embedding (the backbone's pooling)."""
        if self.pooling == "cls_dist":
            return (seq[:, 0] + seq[:, 1]) / 2
        if self.pooling == "cls":
            return seq[:, 0]
        return seq[:, self.encoder.num_special:].mean(dim=1)

    def embedding(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(N, C) pooled clip embeddings of the clean input."""
        seq, _ = self.encoder(feats, x_lens, return_special=True, **kwargs)
        return self.pool(seq)

    # ------------------------------------------------------------------ training

    def forward(self, batch: Mapping[str, Any], *, teacher: AsitModel | None = None,
                step: int | None = None, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """Pretraining loss of a batch (the family contract).

        Args:
            batch: ``features`` (N, T, F), ``x_lens`` (N,), ``cut_ids``.
            teacher: the EMA teacher's module (:attr:`AsitTeacher.module`, in eval mode);
                None = this model itself without gradient (a degenerate teacher, for
                tests and a quick look at a loss).
            step: updates so far (the teacher temperature's warm-up); None = the final
                temperature (validation).
            generator: draws views and masks (validation passes a seeded one so the
                global RNG, which a resumed run restores, is untouched); None = global RNG.

        Returns:
            ``(loss summed over clips, N clips, stats)``; stats are sums over clips too
            (the run divides by the count): ``global_loss``, ``local_loss``,
            ``recon_loss`` (each term unweighted, when its weight is > 0),
            ``teacher_temperature``, ``teacher_entropy``, ``mask_fraction`` (of the input
            elements) and ``masked_patches`` (fraction of patches counted as masked).
            Centres move only in training mode.
        """
        device = self.encoder.pos_embed.device
        empty = not batch["cut_ids"]
        if empty:  # every cut was bad: a probe keeps DDP's collectives in step
            frames = self.encoder.target_frames
            feats = torch.zeros(1, frames, self.encoder.feature_dim, device=device)
            x_lens = torch.full((1,), frames, dtype=torch.int64, device=device)
        else:
            feats, x_lens = batch["features"].to(device), batch["x_lens"].to(device)
        loss, terms = self.losses(feats, x_lens, teacher=teacher, step=step,
                                  generator=generator, update_centers=self.training, probe=empty)
        if empty:
            return loss * 0.0, 0, dict.fromkeys(terms, 0.0)
        n = feats.shape[0]
        return loss * n, n, {k: v * n for k, v in terms.items()}

    def losses(self, feats: torch.Tensor, x_lens: torch.Tensor, *,
               teacher: AsitModel | None = None, step: int | None = None,
               generator: torch.Generator | None = None, update_centers: bool = False,
               probe: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """(weighted loss, mean over clips; {term: value}) of (N, T, F) fbank clips.

        ``update_centers`` moves the centres (all-reduced over ranks); a ``probe`` (the
        stand-in for an empty batch) joins that all-reduce with no rows of its own."""
        teacher = self if teacher is None else teacher
        enc = self.encoder
        n, v = feats.shape[0], self.views["num_views"]
        views = make_views(feats, x_lens, frames=enc.target_frames, generator=generator,
                           **self.views)
        lens = torch.full((views.shape[0],), enc.target_frames, dtype=torch.int64,
                          device=views.device)
        saved: dict[str, torch.Tensor] = {}

        def corrupt(x: torch.Tensor) -> torch.Tensor:
            mask = gmml_mask(x.shape[0], x.shape[1], x.shape[2], cell=self.stride,
                             generator=generator, device=x.device, **self.masking)
            saved["clean"], saved["mask"] = x, mask
            return fill_masked(x, mask, self.mask_fill, generator=generator)

        seq, _ = enc(views, lens, input_hook=corrupt, return_special=True)
        clean, mask = saved["clean"], saved["mask"]
        s = enc.num_special
        tokens = seq[:, s:]
        masked, _ = patch_mask(mask, self.patch, self.stride, threshold=self.patch_threshold)
        w = self.weights
        tt = teacher_temperature(step, **self.teacher_temperatures)
        kw = dict(student_temperature=self.student_temperature, teacher_temperature=tt)
        if w["global"] > 0 or w["local"] > 0:  # reconstruction alone needs no teacher
            with torch.no_grad():
                t_seq, _ = teacher.encoder(views, lens, return_special=True)
        loss = seq.new_zeros((), dtype=torch.float32)
        terms: dict[str, float] = {}
        if w["global"] > 0:
            with torch.no_grad():
                t_global = teacher.global_head(teacher.pool(t_seq)).float()
            s_global = self.global_head(self.pool(seq)).float()
            k = t_global.shape[-1]
            g = global_distillation_loss(s_global.view(v, n, k), t_global.view(v, n, k),
                                         self.global_center, **kw)
            loss = loss + w["global"] * g
            terms["global_loss"] = float(g.detach())
            terms["teacher_entropy"] = teacher_entropy(t_global, self.global_center, tt)
            if update_centers:
                update_center(self.global_center, t_global[: 0 if probe else None],
                              self.center_momentum)
        if w["local"] > 0:
            with torch.no_grad():
                t_local = teacher.local_head(t_seq[:, s:][masked]).float()
            s_local = self.local_head(tokens[masked]).float()
            loc = local_distillation_loss(s_local, t_local, self.local_center, **kw)
            loss = loss + w["local"] * loc
            terms["local_loss"] = float(loc.detach())
            if update_centers:
                update_center(self.local_center, t_local[: 0 if probe else None],
                              self.center_momentum)
        if w["recon"] > 0:
            pred, covered = fold_patches(self.recon_head(tokens).float(), tuple(clean.shape[1:]),
                                         self.patch, self.stride)
            rec = masked_l1_loss(pred, clean.float(), mask & covered)
            loss = loss + w["recon"] * rec
            terms["recon_loss"] = float(rec.detach())
        terms["teacher_temperature"] = tt
        terms["mask_fraction"] = float(mask.float().mean())
        terms["masked_patches"] = float(masked.float().mean())
        return loss, terms


# ------------------------------------------------------------------------------ teacher


class AsitTeacher:
    """The EMA teacher of an :class:`AsitModel` (backbone and heads), checkpointed by the
    run (``stateful={"teacher": teacher}``).

    After student update k (k = 1, 2, ...) the teacher moves as
    ``teacher = m * teacher + (1 - m) * student`` with ``m`` = :meth:`momentum` (k - 1):
    ``momentum_start`` (0.996) at the first update rising to ``momentum_end`` (1.0) on a
    cosine by ``total_steps``. :meth:`follow` (called with the run's step before each
    forward) applies the updates the student made since the last call, so it is correct
    with gradient accumulation and skipped updates, and a resumed run's teacher moves
    exactly as an uninterrupted one's.

    The teacher starts as a copy of the student when first used (after ``init_from`` and
    the move to the device). Its module is in eval mode (no dropout) and has no gradient;
    the centres stay with the student.

    Args:
        student: the model (unwrapped: not the DDP wrapper).
        total_steps: updates of the momentum schedule (the run's budget).
        momentum_start, momentum_end: the schedule's ends.
    """

    def __init__(self, student: AsitModel, *, total_steps: int, momentum_start: float = 0.996,
                 momentum_end: float = 1.0) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= momentum_start <= momentum_end <= 1.0:
            raise ValueError(f"need 0 <= momentum_start <= momentum_end <= 1, got "
                             f"{momentum_start}, {momentum_end}")
        self.student = student
        self.total_steps = int(total_steps)
        self.momentum_start, self.momentum_end = float(momentum_start), float(momentum_end)
        self.step = 0
        self._module: AsitModel | None = None
        self._ema = None

    def _start(self) -> None:
        from speechfm.train.ema import EmaWeights

        module = copy.deepcopy(self.student).eval()
        module.requires_grad_(False)
        self._module = module
        self._ema = EmaWeights(module, decay=self.momentum_start, include_buffers=False)

    @property
    def module(self) -> AsitModel:
        """The teacher network (eval mode, no gradient)."""
        if self._module is None:
            self._start()
        return self._module

    def momentum(self, step: int) -> float:
        """The momentum of the update after student step ``step`` (0-based)."""
        from speechfm.train.ema import cosine_momentum

        return cosine_momentum(step, self.total_steps, start=self.momentum_start,
                               end=self.momentum_end)

    @torch.no_grad()
    def follow(self, step: int) -> None:
        """Catch up with the student after its ``step``-th update (no-op when already there)."""
        module = self.module
        if step <= self.step:
            return
        # One EMA update per call: the run calls this before every forward, so the student
        # made exactly one update since the last call (several only when resuming a teacher
        # from outside a run; then the current student stands for them).
        self._ema.update(self.student, self.momentum(step - 1))
        self._ema.copy_to(module)
        self.step = int(step)

    def state_dict(self) -> dict[str, Any]:
        self.module  # noqa: B018 - make sure it exists
        return {"step": self.step, "ema": self._ema.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        module = self.module
        self._ema.load_state_dict(state["ema"])
        self._ema.copy_to(module)
        self.step = int(state["step"])


def create_asit_model(config) -> AsitModel:
    """Validate ``config`` (:class:`~speechfm.models.asit.AsitModelConfig`) and build it."""
    from speechfm.models.ast.model import create_ast_model

    config.validate()
    encoder = create_ast_model(config.backbone).encoder
    m, vw, ls = config.masking, config.views, config.loss
    return AsitModel(
        encoder, pooling=config.backbone.pooling, head_hidden_dim=config.head_hidden_dim,
        head_bottleneck_dim=config.head_bottleneck_dim, head_layers=config.head_layers,
        num_prototypes=config.num_prototypes, local_num_prototypes=config.local_num_prototypes,
        mask_shape=m.shape, mask_fill=m.fill, min_fraction=m.min_fraction,
        max_fraction=m.max_fraction, max_block_fraction=m.max_block_fraction,
        patch_threshold=m.patch_threshold, num_views=vw.num_views, max_shift=vw.max_shift,
        gain_db=vw.gain_db, global_weight=ls.global_weight, local_weight=ls.local_weight,
        recon_weight=ls.recon_weight, student_temperature=ls.student_temperature,
        teacher_temperature_start=ls.teacher_temperature_start,
        teacher_temperature=ls.teacher_temperature,
        teacher_temperature_warmup_steps=ls.teacher_temperature_warmup_steps,
        center_momentum=ls.center_momentum)
