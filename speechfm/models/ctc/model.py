"""CTC ASR model: [global CMVN] -> [SpecAugment, training only] -> Conformer -> linear head.

The model owns its feature front end (a :class:`~speechfm.features.fbank.TorchFbank`,
which has no weights) and, with CMVN on, the normalisation statistics as buffers, so
``model.safetensors`` plus the config is everything needed to go from waveforms to
log-posteriors.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from speechfm.losses.ctc import ctc_loss, pad_targets

if TYPE_CHECKING:
    from speechfm.features.cmvn import GlobalCMVN
    from speechfm.features.fbank import TorchFbank
    from speechfm.features.specaug import SpecAugment
    from speechfm.models.conformer.model import ConformerEncoder

__all__ = ["CtcModel"]


class CtcModel(nn.Module):
    """Conformer encoder with a CTC output layer.

    Args:
        encoder: the Conformer encoder, (N, T, F) features -> (N, T', C).
        vocab_size: V, blank included.
        fbank: feature extractor matching the encoder input (returned by
            :meth:`feature_extractor`); it holds no weights.
        cmvn: global mean/variance normalisation applied first (its statistics are
            buffers, hence saved with the weights); None = features used as they come.
        specaugment: applied after CMVN in training mode only; None = off.
        head_dropout: dropout on the encoder output before the projection.
        subsampling_factor: input frames per encoder frame (for :attr:`frame_shift_s`).
        blank_id: the blank's id (speechfm tokenizers: 0).
    """

    def __init__(
        self,
        encoder: ConformerEncoder,
        *,
        vocab_size: int,
        fbank: TorchFbank,
        cmvn: GlobalCMVN | None = None,
        specaugment: SpecAugment | None = None,
        head_dropout: float = 0.0,
        subsampling_factor: int = 4,
        blank_id: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id {blank_id} outside [0, {vocab_size})")
        self.fbank = fbank
        self.cmvn = cmvn
        self.specaugment = specaugment
        self.encoder = encoder
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.dim, vocab_size)
        self.vocab_size = vocab_size
        self.subsampling_factor = subsampling_factor
        self.blank_id = blank_id

    # ------------------------------------------------------------------ properties

    @property
    def frame_shift_s(self) -> float:
        """Seconds between encoder output frames (fbank shift x subsampling)."""
        return self.fbank.config.frame_shift * self.subsampling_factor

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz that :meth:`forward_waveforms` expects."""
        return self.fbank.config.sample_rate

    def feature_extractor(self) -> TorchFbank:
        """The :class:`TorchFbank` computing this model's input features from waveforms."""
        return self.fbank

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """int64 (N,) encoder frames for ``x_lens`` feature frames (no forward needed)."""
        return self.encoder.output_lengths(x_lens)

    # ------------------------------------------------------------------ CMVN

    def set_cmvn(self, mean, var, *, var_floor: float | None = None) -> None:
        """Overwrite the CMVN statistics in place (they are saved with the weights).

        Args:
            mean: (F,) per-channel feature mean (array, list or tensor).
            var: (F,) per-channel variance (>= 0).
            var_floor: floor on ``var`` before 1/sqrt; default: the module's.

        Raises:
            ValueError: the model was built without CMVN, or the sizes/values are wrong.
        """
        if self.cmvn is None:
            raise ValueError("this model was built with use_cmvn=False; it has no CMVN buffers")
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        var_t = torch.as_tensor(var, dtype=torch.float64).flatten()
        dim = self.cmvn.dim
        if mean_t.shape != (dim,) or var_t.shape != (dim,):
            raise ValueError(
                f"CMVN statistics must be ({dim},), got mean {tuple(mean_t.shape)} and var "
                f"{tuple(var_t.shape)}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(var_t).all()):
            raise ValueError("CMVN mean/var contain non-finite values")
        if bool((var_t < 0).any()):
            raise ValueError("CMVN variance must be non-negative")
        if var_floor is not None:
            self.cmvn.var_floor = float(var_floor)
        with torch.no_grad():
            self.cmvn.mean.copy_(mean_t)
            self.cmvn.var.copy_(var_t)
            self.cmvn.inv_std.copy_(var_t.clamp(min=self.cmvn.var_floor).rsqrt())

    # ------------------------------------------------------------------ forward

    def normalize(self, feats: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        """CMVN, then SpecAugment when training: what the encoder sees. (N, T, F) -> same."""
        x = feats
        if self.cmvn is not None:
            x = self.cmvn(x, x_lens)
        if self.specaugment is not None and self.training:
            x = self.specaugment(x, x_lens)
        return x

    def encode(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        return_layers: Sequence[int] | None = None,
        chunk_size: int | None = None,
        left_context: int | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
    ):
        """Encoder output of a padded batch of features (the embedding path).

        Args:
            feats: (N, T, F) fbank features (not normalised: CMVN is applied here).
            x_lens: int64 (N,) valid frames.
            return_layers: also return these encoder layers (see
                :meth:`ConformerEncoder.forward`).
            chunk_size, left_context, language, adapters: passed to the encoder.

        Returns:
            out: (N, T', C) encoder output, zero on padding.
            out_lens: int64 (N,).
            layers (only with ``return_layers``): list of (N, T', C).
        """
        x = self.normalize(feats, x_lens)
        return self.encoder(
            x,
            x_lens,
            chunk_size=chunk_size,
            left_context=left_context,
            return_layers=return_layers,
            language=language,
            adapters=adapters,
        )

    def logits_to_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """(N, T', C) encoder output -> (N, T', V) float32 log-posteriors."""
        logits = self.head(self.head_dropout(enc))
        # log_softmax in float32 even under bf16/fp16 autocast: low-precision log-probs
        # lose the small posteriors CTC's sums depend on.
        return torch.log_softmax(logits.float(), dim=-1)

    def forward(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        chunk_size: int | None = None,
        left_context: int | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-posteriors of a padded batch of features.

        Args:
            feats: (N, T, F) fbank features.
            x_lens: int64 (N,) valid frames.
            chunk_size, left_context, language, adapters: passed to the encoder.

        Returns:
            log_probs: float32 (N, T', V); rows past ``out_lens`` are meaningless.
            out_lens: int64 (N,).
        """
        enc, out_lens = self.encode(
            feats,
            x_lens,
            chunk_size=chunk_size,
            left_context=left_context,
            language=language,
            adapters=adapters,
        )
        return self.logits_to_log_probs(enc), out_lens

    def forward_waveforms(
        self,
        wavs: torch.Tensor,
        lens: torch.Tensor | None = None,
        *,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> log-posteriors in one call (fbank, CMVN, encoder, head).

        Args:
            wavs: float (N, S) samples in [-1, 1] at :attr:`sample_rate`.
            lens: int64 (N,) valid samples; default S for every row.
            sample_rate: rate of ``wavs`` in Hz if known; a mismatch is an error (resample
                first, e.g. with soxr).
            kwargs: passed to :meth:`forward` (chunk_size, left_context, language, adapters).

        Returns:
            log_probs: float32 (N, T', V); out_lens: int64 (N,).
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(
                f"waveforms at {sample_rate} Hz given to a model expecting {self.sample_rate} Hz; "
                "resample them first"
            )
        feats, feat_lens = self.fbank(wavs, lens)
        return self(feats, feat_lens, **kwargs)

    # ------------------------------------------------------------------ training

    def compute_loss(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        targets: torch.Tensor | Sequence[Sequence[int]],
        y_lens: torch.Tensor | None = None,
        *,
        zero_infinity: bool = True,
        utt_ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CTC loss of a batch, summed over utterances.

        Args:
            feats: (N, T, F) fbank features.
            x_lens: int64 (N,) valid frames.
            targets: N token-id lists, or an int (N, U) padded tensor with ``y_lens``.
            y_lens: int64 (N,) target lengths (required with a tensor of targets).
            zero_infinity: utterances whose targets cannot fit their frames add 0 (and
                are counted in ``num_infinite``); False makes the loss inf instead.
            utt_ids: utterance names for error messages.
            kwargs: passed to :meth:`forward`.

        Returns:
            loss: scalar, summed over the utterances that count.
            stats: ``loss`` (that sum, float), ``num_utts`` (utterances in the sum),
            ``num_infinite`` (infeasible ones left out), ``num_frames`` (encoder frames),
            ``num_input_frames``, ``num_tokens``; all sums, ready for a trainer's logs.
        """
        if isinstance(targets, torch.Tensor):
            if y_lens is None:
                raise ValueError("y_lens is required when targets is a tensor")
            padded, lens = targets, y_lens
        else:
            padded, lens = pad_targets(targets)
        log_probs, out_lens = self(feats, x_lens, **kwargs)
        loss, per_utt = ctc_loss(
            log_probs,
            out_lens,
            padded.to(log_probs.device),
            lens.to(log_probs.device),
            blank=self.blank_id,
            reduction="sum",
            zero_infinity=zero_infinity,
            utt_ids=utt_ids,
        )
        finite = torch.isfinite(per_utt)
        num_infinite = int((~finite).sum())
        stats = {
            "loss": float(per_utt[finite].sum()),
            "num_utts": float(per_utt.shape[0] - num_infinite),
            "num_infinite": float(num_infinite),
            "num_frames": float(out_lens.sum()),
            "num_input_frames": float(x_lens.sum()),
            "num_tokens": float(lens.sum()),
        }
        return loss, stats
