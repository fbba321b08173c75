"""Cross-entropy of a classifier's logits against hard (class id) or soft (mixup) targets."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["classification_loss"]


def classification_loss(logits: torch.Tensor, targets: Any) -> tuple[torch.Tensor, int, dict]:
    """Summed cross-entropy of (N, K) ``logits``.

    ``targets`` are int64 (N,) class ids, or float (N, K) class distributions (mixup: soft
    targets; "correct" then counts the argmax of the distribution).

    Returns ``(loss_sum, N, {"correct": number right})``.

    Raises:
        ValueError: soft targets whose shape is not the logits'.
    """
    targets = torch.as_tensor(targets, device=logits.device)
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(targets.shape)} for logits "
                             f"{tuple(logits.shape)}")
        loss = -(targets * torch.log_softmax(logits, dim=-1)).sum()
        hard = targets.argmax(-1)
    else:
        hard = targets.long()
        loss = F.cross_entropy(logits, hard, reduction="sum")
    correct = float((logits.argmax(-1) == hard).sum())
    return loss, int(hard.numel()), {"correct": correct}
