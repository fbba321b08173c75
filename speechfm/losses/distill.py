"""Self-distillation losses (DINO, Caron et al. 2021; iBOT; ASiT, Atito et al.): a student
matches the centred, sharpened output distribution of an EMA teacher, plus masked
reconstruction.

With teacher scores ``t`` (K prototypes), student scores ``s``, the teacher's running
centre ``c`` and temperatures ``tau_t`` < ``tau_s``::

    p_t = softmax((t - c) / tau_t)          (no gradient: the teacher's target)
    H(p_t, s) = -sum_k p_t[k] * log_softmax(s / tau_s)[k]

Centring (subtracting the EMA of the teacher's mean output) keeps one prototype from
dominating, sharpening (``tau_t`` small) keeps the targets from going uniform; together
they prevent collapse. The teacher temperature warms up linearly (0.04 -> 0.07 in DINO)
because a too-sharp teacher early in training destabilises it.

- :func:`global_distillation_loss`: across views - the teacher's view i against the
  student's view j != i (the pooled / CLS token's scores);
- :func:`local_distillation_loss`: per patch, at the student's masked patches, against
  the teacher's score for the same patch of the clean view;
- :func:`masked_l1_loss`: L1 reconstruction over masked input elements only.

Every loss is a mean (over rows, pairs or masked elements) in float32 (float64 for
float64 inputs); an empty selection gives 0 still connected to the graph.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "dino_cross_entropy",
    "global_distillation_loss",
    "local_distillation_loss",
    "masked_l1_loss",
    "teacher_entropy",
    "teacher_probs",
    "teacher_temperature",
    "update_center",
]


def teacher_temperature(step: int | None, *, warmup_steps: int, start: float = 0.04,
                        end: float = 0.07) -> float:
    """DINO's teacher temperature: ``start`` at step 0, linearly to ``end`` at
    ``warmup_steps``, ``end`` after (and for ``step`` None, e.g. validation)."""
    if step is None or warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * max(step, 0) / warmup_steps)


def _dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor | None,
                  temperature: float) -> torch.Tensor:
    """``softmax((t - c) / tau_t)`` over the last dim, without gradient."""
    t = teacher_logits.detach().to(_dtype(teacher_logits))
    if center is not None:
        t = t - center.detach().to(t.dtype)
    return F.softmax(t / temperature, dim=-1)


def dino_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       center: torch.Tensor | None = None, *, student_temperature: float = 0.1,
                       teacher_temperature: float = 0.07) -> torch.Tensor:
    """Per-row ``H(p_t, s)`` of (..., K) scores: a (...) tensor (gradient to the student only)."""
    p = teacher_probs(teacher_logits, center, teacher_temperature)
    log_q = F.log_softmax(student_logits.to(p.dtype) / student_temperature, dim=-1)
    return -(p * log_q).sum(-1)


def global_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                             center: torch.Tensor | None = None, *,
                             student_temperature: float = 0.1,
                             teacher_temperature: float = 0.07) -> torch.Tensor:
    """Mean cross-view DINO loss.

    Args:
        student, teacher: (V, N, K) scores of V views of N clips.
        center: (K,) or (1, K) teacher centre, or None.

    Returns:
        Scalar: the mean over clips and ordered view pairs (i, j), i != j, of
        ``H(p_t[i], s[j])``; with one view, ``H(p_t[0], s[0])``.
    """
    if student.shape != teacher.shape or student.dim() != 3:
        raise ValueError(f"need (V, N, K) student and teacher scores, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    v = student.shape[0]
    p = teacher_probs(teacher, center, teacher_temperature)
    log_q = F.log_softmax(student.to(p.dtype) / student_temperature, dim=-1)
    if v == 1:
        return -(p[0] * log_q[0]).sum(-1).mean()
    # sum_{i != j} <p_i, log q_j> = <sum_i p_i, sum_j log q_j> - sum_i <p_i, log q_i>
    cross = (p.sum(0) * log_q.sum(0)).sum(-1) - (p * log_q).sum(-1).sum(0)
    return -cross.mean() / (v * (v - 1))


def local_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                            center: torch.Tensor | None = None, *,
                            student_temperature: float = 0.1,
                            teacher_temperature: float = 0.07) -> torch.Tensor:
    """Mean per-patch DINO loss over (M, K) scores of the M selected (masked) patches."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "patch scores differ in shape")
    if student.shape[0] == 0:
        return student.sum().to(_dtype(student)) * 0.0
    return dino_cross_entropy(student, teacher, center, student_temperature=student_temperature,
                              teacher_temperature=teacher_temperature).mean()


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` over the elements where ``mask`` (bool, same shape) is True;
    the target gets no gradient."""
    if pred.shape != target.shape or mask.shape != pred.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape")
    dtype = _dtype(pred, target)
    diff = (pred.to(dtype) - target.detach().to(dtype)).abs()
    count = mask.sum()
    if int(count) == 0:
        return pred.sum().to(dtype) * 0.0
    return (diff * mask).sum() / count


@torch.no_grad()
def teacher_entropy(teacher_logits: torch.Tensor, center: torch.Tensor | None,
                    temperature: float) -> float:
    """Mean entropy (nats) of the teacher's target distributions: near log K = uniform
    collapse, near 0 = one-prototype collapse."""
    p = teacher_probs(teacher_logits, center, temperature)
    return float(-(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean())


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float = 0.9) -> None:
    """``center = m * center + (1 - m) * mean(teacher_logits)`` in place: the mean over the
    rows of (..., K) scores, over all ranks of a process group. No rows: unchanged."""
    rows = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).to(torch.float64)
    stats = torch.cat((rows.sum(0), torch.tensor([rows.shape[0]], dtype=torch.float64,
                                                 device=rows.device)))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stats)
    if stats[-1] <= 0:
        return
    mean = (stats[:-1] / stats[-1]).to(center.dtype).reshape(center.shape)
    center.mul_(momentum).add_(mean, alpha=1.0 - momentum)
