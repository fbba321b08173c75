"""CTC ASR model: the shared speech front end (:class:`SpeechEncoder`) -> linear head.

The family contract (:mod:`speechfm.models.io`): ``model(batch)`` is the training loss,
``encode`` the encoder output, ``recognize`` the search (greedy or prefix beam).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from speechfm.losses.ctc import ctc_loss, pad_targets
from speechfm.models.conformer.speech_encoder import SpeechEncoder

__all__ = ["CtcModel"]

SEARCH_METHODS = ("greedy", "beam")


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class CtcModel(nn.Module):
    """Speech encoder with a CTC output layer.

    Args:
        encoder: the shared front end, (N, T, F) fbank features -> (N, T', C).
        vocab_size: V, blank included.
        head_dropout: dropout on the encoder output before the projection.
        blank_id: the blank's id (speechfm tokenizers: 0).
    """

    def __init__(self, encoder: SpeechEncoder, *, vocab_size: int, head_dropout: float = 0.0,
                 blank_id: int = 0) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id {blank_id} outside [0, {vocab_size})")
        self.encoder = encoder
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.dim, vocab_size)
        self.vocab_size = vocab_size
        self.blank_id = blank_id

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """Encoder output (and layers): :meth:`SpeechEncoder.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def log_probs(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (N, T', V) log-posteriors and int64 (N,) lengths of (N, T, F) features.

        ``kwargs`` go to the encoder (chunk_size, left_context, language, adapters).
        """
        enc, out_lens = self.encode(feats, x_lens, **kwargs)
        logits = self.head(self.head_dropout(enc))
        # log_softmax in float32 even under bf16/fp16 autocast: low-precision log-probs
        # lose the small posteriors CTC's sums depend on.
        return torch.log_softmax(logits.float(), dim=-1), out_lens

    def forward(self, batch: Mapping[str, Any], **kwargs: Any) -> tuple[torch.Tensor, float, dict]:
        """Training loss of a batch (the family contract).

        Args:
            batch: ``features`` (N, T, F), ``x_lens`` (N,), ``targets`` (N token-id lists),
                ``cut_ids`` (names for error messages).
            kwargs: passed to the encoder.

        Returns:
            ``(loss summed over utterances, number of target tokens, stats)``; utterances
            whose targets cannot be aligned to their frames add 0 and are counted in
            ``stats["num_infeasible"]``.
        """
        device = model_device(self)
        if not batch["cut_ids"]:
            # Every cut was bad: a zero-weight forward keeps DDP's collectives in step.
            probe = torch.zeros(1, 32, self.encoder.feature_dim, device=device)
            log_probs, _ = self.log_probs(probe, torch.full((1,), 32, device=device))
            # the same stats keys as a real batch: ranks all-reduce them by key
            return log_probs.sum() * 0.0, 0, {"num_utts": 0.0, "num_infeasible": 0.0}
        padded, y_lens = pad_targets(batch["targets"], device=device)
        log_probs, out_lens = self.log_probs(batch["features"].to(device),
                                             batch["x_lens"].to(device), **kwargs)
        loss, per_utt = ctc_loss(log_probs, out_lens, padded, y_lens, blank=self.blank_id,
                                 reduction="sum", zero_infinity=True, utt_ids=batch["cut_ids"])
        finite = torch.isfinite(per_utt)
        # Normalised per token, so the curve reads the same for any tokenizer.
        tokens = float(y_lens[finite].sum())
        return loss, tokens, {"num_utts": float(finite.sum()),
                              "num_infeasible": float((~finite).sum())}

    def compute_loss(self, feats: torch.Tensor, x_lens: torch.Tensor,
                     targets: Sequence[Sequence[int]], *, utt_ids: Sequence[str] | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-batch CTC loss with its counts, from tensors (for evaluation and tests).

        Returns:
            loss: scalar, summed over the utterances that count; stats: ``loss``,
            ``num_utts``, ``num_infinite`` (infeasible, left out), ``num_tokens``.
        """
        padded, lens = pad_targets(targets, device=feats.device)
        log_probs, out_lens = self.log_probs(feats, x_lens, **kwargs)
        losses, per_utt = ctc_loss(log_probs, out_lens, padded, lens, blank=self.blank_id,
                                   reduction="none", zero_infinity=True, utt_ids=utt_ids)
        finite = torch.isfinite(per_utt)
        loss = losses[finite.to(losses.device)].sum()
        return loss, {"loss": float(loss.detach()), "num_utts": float(finite.sum()),
                      "num_infinite": float((~finite).sum()),
                      "num_tokens": float(lens[finite].sum())}

    def recognize(self, feats: torch.Tensor, x_lens: torch.Tensor, *, method: str = "greedy",
                  beam: int = 4, **kwargs: Any):
        """Best hypothesis per utterance (tokens, frames, confidences).

        Args:
            feats, x_lens: (N, T, F) features and int64 (N,) lengths.
            method: "greedy" (best path) or "beam" (prefix beam search, no LM).
            beam: beam width.
            kwargs: passed to the encoder (chunk_size, left_context, language, adapters).

        Returns:
            N :class:`~speechfm.decode.ctc.CtcHypothesis`.
        """
        from speechfm.decode.ctc import CtcHypothesis, ctc_greedy_hypotheses, ctc_prefix_beam_search

        if method not in SEARCH_METHODS:
            raise ValueError(f"method must be one of {SEARCH_METHODS}, got {method!r}")
        log_probs, out_lens = self.log_probs(feats, x_lens, **kwargs)
        if method == "greedy":
            return ctc_greedy_hypotheses(log_probs, out_lens, blank=self.blank_id)
        nbest = ctc_prefix_beam_search(log_probs, out_lens, beam=beam, nbest=1, blank=self.blank_id)
        return [hyps[0] if hyps else CtcHypothesis(tokens=[]) for hyps in nbest]
