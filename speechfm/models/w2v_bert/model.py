"""w2v-BERT pretraining model: the shared speech encoder, a Gumbel quantizer, and the
contrastive and masked-prediction heads.

::

    fbank -> front end (stacking / subsampling + projection) --unmasked--> quantizer -> codes, q
                                      | span masks -> mask embedding
                                      v
                    blocks 1..K (contrastive module) -> context (layer K)  ~ q   (InfoNCE)
                    blocks K+1..L (MLM module)       -> logits over codes  ~ codes (CE, masked)

The family contract (:mod:`speechfm.models.io`): ``model(batch, step=...)`` is the
pretraining loss (per masked frame: contrastive + MLM + weighted diversity and feature
penalty), ``encode`` the plain (unmasked) encoder for ``embed`` and for fine-tuning
(``init_from`` copies ``encoder.*``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from speechfm.losses.ssl import contrastive_loss, feature_penalty, masked_prediction_loss
from speechfm.models.conformer.speech_encoder import SpeechEncoder
from speechfm.models.ctc.model import model_device
from speechfm.nn.masking import compute_span_mask
from speechfm.nn.masks import lengths_to_valid_mask
from speechfm.nn.quantizer import GumbelVectorQuantizer, collapse_warning

__all__ = ["W2vBertModel"]


class W2vBertModel(nn.Module):
    """Speech encoder + quantizer + contrastive projection + MLM head.

    Args:
        encoder: the shared front end; its first ``num_contrastive_layers`` blocks are the
            contrastive module.
        quantizer: quantizes the unmasked front-end output (width ``encoder.dim``).
        num_contrastive_layers: K.
        final_dim: width of the contrastive task's projections.
        mask_prob, mask_span, min_spans: span masking (:func:`compute_span_mask`).
        num_negatives: distractors per masked frame.
        contrastive_temperature: cosine-logit temperature.
        num_target_codebooks: quantizer groups the MLM head predicts.
        contrastive_weight, mlm_weight, diversity_weight, feature_penalty_weight: loss
            weights.
    """

    def __init__(self, encoder: SpeechEncoder, quantizer: GumbelVectorQuantizer, *,
                 num_contrastive_layers: int, final_dim: int, mask_prob: float, mask_span: int,
                 min_spans: int, num_negatives: int, contrastive_temperature: float,
                 num_target_codebooks: int = 1, contrastive_weight: float = 1.0,
                 mlm_weight: float = 1.0, diversity_weight: float = 0.1,
                 feature_penalty_weight: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        dim = encoder.dim
        # wav2vec 2.0 / fairseq2 initialise the mask embedding uniformly in [0, 1).
        self.mask_embedding = nn.Parameter(torch.rand(dim))
        self.project_context = nn.Linear(dim, final_dim)
        self.project_targets = nn.Linear(quantizer.code_dim, final_dim)
        self.num_entries = quantizer.num_entries
        self.num_target_codebooks = num_target_codebooks
        self.mlm_head = nn.Linear(dim, num_target_codebooks * quantizer.num_entries)
        self.num_contrastive_layers = num_contrastive_layers
        self.mask_prob, self.mask_span, self.min_spans = mask_prob, mask_span, min_spans
        self.num_negatives = num_negatives
        self.contrastive_temperature = contrastive_temperature
        self.weights = {"contrastive": contrastive_weight, "mlm": mlm_weight,
                        "diversity": diversity_weight, "feature_penalty": feature_penalty_weight}

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """The encoder without masking (embeddings, fine-tuning): :meth:`SpeechEncoder.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def forward(self, batch: Mapping[str, Any], *, step: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, dict]:
        """Pretraining loss of a batch (the family contract).

        Args:
            batch: ``features`` (N, T, F), ``x_lens`` (N,), ``cut_ids``.
            step: training step (the quantizer's temperature schedule); None keeps it.
            generator: draws masks and distractors (validation passes a seeded one so that
                it leaves the global RNG, which training resumes from, untouched); None =
                the global RNG.

        Returns:
            ``(loss summed over masked frames, masked frames, stats)``; stats are sums over
            masked frames too (the trainer divides by the count): each loss term,
            ``contrastive_acc``, ``mlm_acc``, ``code_perplexity``, ``prob_perplexity``,
            ``used_fraction``, ``temperature``.
        """
        device = model_device(self)
        if step is not None:
            self.quantizer.set_step(step)
        if not batch["cut_ids"]:  # every cut was bad: keep DDP's collectives in step
            probe = torch.zeros(1, 32, self.encoder.feature_dim, device=device)
            return self._loss(probe, torch.full((1,), 32, device=device), generator, empty=True)
        return self._loss(batch["features"].to(device), batch["x_lens"].to(device), generator)

    def _loss(self, feats, x_lens, generator, empty: bool = False):
        saved: dict[str, torch.Tensor] = {}

        def mask_frames(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
            saved["features"], saved["lens"] = x, lens
            mask = compute_span_mask(lens, x.shape[1], mask_prob=self.mask_prob,
                                     span=self.mask_span, min_spans=self.min_spans,
                                     generator=generator).to(x.device)
            saved["mask"] = mask
            return torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)

        out, out_lens, (context,) = self.encoder(feats, x_lens, frame_hook=mask_frames,
                                                 return_layers=(self.num_contrastive_layers,))
        features, mask = saved["features"], saved["mask"]
        valid = lengths_to_valid_mask(out_lens, features.shape[1])
        quant = self.quantizer(features, valid)
        contrast = contrastive_loss(
            self.project_context(context), self.project_targets(quant.quantized), mask,
            num_negatives=self.num_negatives, temperature=self.contrastive_temperature,
            generator=generator)
        g = self.num_target_codebooks
        logits = self.mlm_head(out).view(*out.shape[:2], g, self.num_entries)
        mlm_sum, mlm_count, mlm_correct = masked_prediction_loss(
            logits, quant.sampled_ids[..., :g].detach(), mask)
        frames = float(contrast.count)
        penalty = feature_penalty(features, valid)
        w = self.weights
        per_frame = (w["diversity"] * quant.diversity_loss + w["feature_penalty"] * penalty)
        loss = (w["contrastive"] * contrast.loss + w["mlm"] * mlm_sum / g + frames * per_frame)
        if empty:
            return loss * 0.0, 0, dict.fromkeys(_STATS, 0.0)
        stats = {
            "contrastive_loss": float(contrast.loss.detach()),
            "mlm_loss": float(mlm_sum.detach()) / g,
            "diversity_loss": frames * float(quant.diversity_loss.detach()),
            "feature_penalty": frames * float(penalty.detach()),
            "contrastive_acc": float(contrast.correct),
            "mlm_acc": float(mlm_correct) / g,
            "code_perplexity": frames * float(quant.code_perplexity),
            "prob_perplexity": frames * float(quant.prob_perplexity.detach()),
            "used_fraction": frames * float(quant.used_fraction),
            "temperature": frames * float(quant.temperature),
        }
        # The usage figures only, detached: keeping the whole output would hold the batch's
        # autograd graph (logits, quantized vectors) alive until the next forward.
        self.last_quantizer_output = dataclasses.replace(
            quant, quantized=None, code_ids=None, sampled_ids=None, logits=None,
            prob_perplexity=quant.prob_perplexity.detach(),
            diversity_loss=quant.diversity_loss.detach())
        return loss, frames, stats

    def codebook_warning(self) -> str | None:
        """A message when the last batch's codebook usage collapsed, else None."""
        quant = getattr(self, "last_quantizer_output", None)
        return collapse_warning(quant) if quant is not None else None


_STATS = ("contrastive_loss", "mlm_loss", "diversity_loss", "feature_penalty", "contrastive_acc",
          "mlm_acc", "code_perplexity", "prob_perplexity", "used_fraction", "temperature")
