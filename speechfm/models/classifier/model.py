"""Conformer audio classifier: the shared speech front end -> pooling -> LayerNorm + Linear.

The family contract (:mod:`speechfm.models.io`): ``model(batch)`` is the training loss
(cross-entropy of ``batch["targets"]``), ``classify`` the (N, K) logits, ``embedding`` the
pooled utterance embedding (``speechfm.load(dir).classify(audio)`` / ``.embed(audio,
pooled=True)``).  Keyword spotting, speaker and language identification: any label per
utterance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from speechfm.losses.classification import classification_loss
from speechfm.models.conformer.speech_encoder import SpeechEncoder, create_speech_encoder

__all__ = ["SpeechClassifier", "create_classifier_model"]


class SpeechClassifier(nn.Module):
    """Speech encoder + utterance pooling + classifier head.

    Args:
        encoder: the shared front end, (N, T, F) fbank features -> (N, T', C).
        num_classes: K; 0 = no head (embeddings only).
        pooling: "mean" over the valid frames or "attention" (learned query).
        head_dropout: dropout on the pooled embedding before the head.
    """

    def __init__(self, encoder: SpeechEncoder, *, num_classes: int, pooling: str = "mean",
                 head_dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.num_classes = num_classes
        dim = encoder.dim
        self.attn_pool = nn.Linear(dim, 1) if pooling == "attention" else None
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = (nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
                     if num_classes else None)

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """Encoder output (and layers): :meth:`SpeechEncoder.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def pool(self, out: torch.Tensor, out_lens: torch.Tensor) -> torch.Tensor:
        """(N, T', C) encoder frames with (N,) valid lengths -> (N, C)."""
        valid = torch.arange(out.shape[1], device=out.device)[None, :] < out_lens[:, None]
        if self.attn_pool is None:
            return (out * valid[..., None]).sum(1) / out_lens.clamp(min=1)[:, None].to(out.dtype)
        scores = self.attn_pool(out).squeeze(-1).float().masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0).to(out.dtype)
        return (weights[..., None] * out).sum(1)

    def embedding(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(N, C) pooled utterance embeddings."""
        out, out_lens = self.encoder(feats, x_lens, **kwargs)[:2]
        return self.pool(out, out_lens.to(out.device))

    def classify(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(N, K) float32 logits (``kwargs``: the encoder's, e.g. ``adapters``)."""
        if self.head is None:
            raise ValueError("this classifier has no head (num_classes 0); fine-tune one first")
        return self.head(self.head_dropout(self.embedding(feats, x_lens, **kwargs))).float()

    def forward(self, batch: Mapping[str, Any], **kwargs: Any) -> tuple[torch.Tensor, int, dict]:
        """Cross-entropy of ``batch["targets"]`` (int (N,) ids or float (N, K) soft
        targets), summed: ``(loss_sum, N, {"correct": number right})``."""
        device = next(self.parameters()).device
        feats = batch["features"].to(device)
        if feats.shape[0] == 0:
            return feats.sum() * 0.0, 0, {"correct": 0.0}
        logits = self.classify(feats, batch["x_lens"].to(device), **kwargs)
        return classification_loss(logits, batch["targets"])


def create_classifier_model(config) -> SpeechClassifier:
    """Validate ``config`` (:class:`ClassifierModelConfig`) and build the model."""
    from speechfm.nn.adapters import adapter_factory

    config.validate()
    encoder = create_speech_encoder(config.encoder)
    for spec in config.adapters:
        encoder.conformer.add_adapter(
            spec["name"], adapter_factory(spec["kind"], **(spec.get("options") or {})),
            points=spec["points"], layers=spec.get("layers"))
    return SpeechClassifier(encoder, num_classes=config.num_classes, pooling=config.pooling,
                            head_dropout=config.head_dropout)
