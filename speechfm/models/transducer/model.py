"""Transducer ASR model: [CMVN] -> [SpecAugment] -> Conformer -> joiner(encoder, stateless predictor).

Modules:

- :class:`StatelessPredictor`: the prediction network of a "stateless" transducer
  (Ghodsi et al. 2020; icefall's ``Decoder``): an embedding of the last ``context_size``
  tokens mixed by a depthwise 1-D convolution, then ReLU. Its output after ``u`` labels
  depends on labels ``u - context_size .. u - 1`` only (blanks before the start), so search
  can cache it per context and merge hypotheses that agree on their last tokens.
- :class:`Joiner`: ``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))``.
- :class:`TransducerModel`: the model owns its feature front end and CMVN buffers like
  :class:`~speechfm.models.ctc.CtcModel` (same interface), plus the two vocabulary
  projections of the pruned loss' "simple" joiner.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.errors import DataError
from speechfm.losses.ctc import pad_targets
from speechfm.losses.transducer import TransducerLossConfig, transducer_loss
from speechfm.models.ctc.model import CtcModel

if TYPE_CHECKING:
    from speechfm.features.cmvn import GlobalCMVN
    from speechfm.features.fbank import TorchFbank
    from speechfm.features.specaug import SpecAugment
    from speechfm.models.conformer.model import ConformerEncoder

__all__ = ["Joiner", "StatelessPredictor", "TransducerModel"]


class StatelessPredictor(nn.Module):
    """Prediction network over the last ``context_size`` tokens.

    Args:
        vocab_size: V (blank included).
        dim: D, the embedding / output size.
        blank_id: the blank's id; the context before the first label is all blanks.
        context_size: tokens seen (1 = the last token only: no convolution).
    """

    def __init__(self, vocab_size: int, dim: int, *, blank_id: int = 0, context_size: int = 2):
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id {blank_id} outside [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.dim = dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, dim)
        # Depthwise (one filter per channel), unpadded: output u mixes inputs u-c+1 .. u.
        self.conv = (
            nn.Conv1d(dim, dim, kernel_size=context_size, groups=dim, bias=False)
            if context_size > 1
            else None
        )

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """Predictor output for each position of ``y``.

        Args:
            y: int (N, U) token ids. In training: ``[blank] + labels`` (U + 1 positions), so
                output ``u`` is the state after ``u`` labels. In search: the last
                ``context_size`` tokens of each hypothesis (with ``need_pad=False``).
            need_pad: left-pad ``y`` with ``context_size - 1`` blanks so that there is one
                output per input position; False: ``y`` already holds the context and the
                output has ``U - context_size + 1`` positions.

        Returns:
            (N, U, D) (or (N, U - context_size + 1, D) without padding).
        """
        if need_pad and self.context_size > 1:
            y = F.pad(y, (self.context_size - 1, 0), value=self.blank_id)
        out = self.embedding(y)
        if self.conv is not None:
            out = self.conv(out.transpose(1, 2)).transpose(1, 2)
        return F.relu(out)


class Joiner(nn.Module):
    """``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))``.

    Args:
        encoder_dim: C of the encoder output.
        decoder_dim: D of the predictor output.
        joiner_dim: J, the hidden size.
        vocab_size: V.
    """

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(
        self, enc: torch.Tensor, dec: torch.Tensor, *, project_input: bool = True
    ) -> torch.Tensor:
        """Joint logits (unnormalised) of broadcastable encoder and predictor inputs.

        Args:
            enc: (..., C) encoder vectors, e.g. (N, T, 1, C) for the full lattice, (N, T, R, C)
                pruned, or (H, C) in search; (..., J) with ``project_input=False``.
            dec: (..., D) predictor vectors broadcastable against ``enc``, e.g. (N, 1, U + 1, D);
                (..., J) with ``project_input=False``.
            project_input: apply ``encoder_proj`` / ``decoder_proj`` here; False when the
                caller projected already (pruned training gathers projected vectors, search
                caches them).

        Returns:
            (..., V) logits of the broadcast shape.
        """
        if project_input:
            enc = self.encoder_proj(enc)
            dec = self.decoder_proj(dec)
        return self.output_linear(torch.tanh(enc + dec))


class TransducerModel(nn.Module):
    """Conformer encoder + stateless predictor + joiner.

    Args:
        encoder: the Conformer encoder, (N, T, F) features -> (N, T', C).
        predictor: the :class:`StatelessPredictor` (its ``dim`` is D).
        joiner: the :class:`Joiner`.
        vocab_size: V, blank included.
        fbank: feature extractor matching the encoder input (no weights).
        cmvn: global mean/variance normalisation applied first (buffers); None = off.
        specaugment: applied after CMVN in training mode only; None = off.
        subsampling_factor: input frames per encoder frame (for :attr:`frame_shift_s`).
        blank_id: the blank's id (speechfm tokenizers: 0).
        ctc_head: add ``ctc_output``, a linear CTC layer on the encoder output for the
            auxiliary CTC loss (``TransducerLossConfig.ctc_scale``).
    """

    def __init__(
        self,
        encoder: ConformerEncoder,
        predictor: StatelessPredictor,
        joiner: Joiner,
        *,
        vocab_size: int,
        fbank: TorchFbank,
        cmvn: GlobalCMVN | None = None,
        specaugment: SpecAugment | None = None,
        subsampling_factor: int = 4,
        blank_id: int = 0,
        ctc_head: bool = False,
    ) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id {blank_id} outside [0, {vocab_size})")
        if predictor.blank_id != blank_id:
            raise ValueError(f"predictor blank_id {predictor.blank_id} != model's {blank_id}")
        sizes = (predictor.vocab_size, joiner.output_linear.out_features)
        if sizes != (vocab_size, vocab_size):
            raise ValueError(f"predictor / joiner vocabularies {sizes} != vocab_size {vocab_size}")
        self.fbank = fbank
        self.cmvn = cmvn
        self.specaugment = specaugment
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        # The pruned loss' additive "simple" joiner: am[t] + lm[u] over the vocabulary.
        self.simple_am_proj = nn.Linear(encoder.dim, vocab_size)
        self.simple_lm_proj = nn.Linear(predictor.dim, vocab_size)
        self.ctc_output = nn.Linear(encoder.dim, vocab_size) if ctc_head else None
        self.vocab_size = vocab_size
        self.subsampling_factor = subsampling_factor
        self.blank_id = blank_id

    # The feature front end and CMVN handling are the CTC model's, word for word; they
    # touch only fbank / cmvn / specaugment / encoder / subsampling_factor.
    frame_shift_s = CtcModel.frame_shift_s
    sample_rate = CtcModel.sample_rate
    feature_extractor = CtcModel.feature_extractor
    output_lengths = CtcModel.output_lengths
    set_cmvn = CtcModel.set_cmvn
    normalize = CtcModel.normalize
    encode = CtcModel.encode

    @property
    def context_size(self) -> int:
        """Tokens the predictor sees."""
        return self.predictor.context_size

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        chunk_size: int | None = None,
        left_context: int | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
        targets: torch.Tensor | Sequence[Sequence[int]] | None = None,
        **loss_kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        """Encoder output of a padded batch of features: what the searches in
        :mod:`speechfm.decode.transducer` take; or, given ``targets``, the training loss.

        Args:
            feats: (N, T, F) fbank features (CMVN is applied here).
            x_lens: int64 (N,) valid frames.
            chunk_size, left_context, language, adapters: passed to the encoder.
            targets: when given, return :meth:`compute_loss` instead (``loss_kwargs``:
                ``y_lens``, ``loss_config``, ``step``, ``utt_ids``). Trainers call this
                path through ``model(...)`` so that wrappers such as DDP see a forward.

        Returns:
            enc: (N, T', C), zero on padding; enc_lens: int64 (N,). With ``targets``:
            (loss, stats) of :meth:`compute_loss`.
        """
        if targets is not None:
            return self.compute_loss(
                feats, x_lens, targets, chunk_size=chunk_size, left_context=left_context,
                language=language, adapters=adapters, **loss_kwargs,
            )
        if loss_kwargs:
            raise TypeError(f"unexpected arguments without targets: {sorted(loss_kwargs)}")
        return self.encode(
            feats,
            x_lens,
            chunk_size=chunk_size,
            left_context=left_context,
            language=language,
            adapters=adapters,
        )

    def forward_waveforms(
        self,
        wavs: torch.Tensor,
        lens: torch.Tensor | None = None,
        *,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> encoder output in one call (fbank, CMVN, encoder).

        Args:
            wavs: float (N, S) samples in [-1, 1] at :attr:`sample_rate`.
            lens: int64 (N,) valid samples; default S for every row.
            sample_rate: rate of ``wavs`` in Hz if known; a mismatch is an error.
            kwargs: passed to :meth:`forward`.

        Returns:
            enc: (N, T', C); enc_lens: int64 (N,).
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
        loss_config: TransducerLossConfig | None = None,
        step: int,
        utt_ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Transducer loss of a batch, summed over utterances.

        Args:
            feats: (N, T, F) fbank features.
            x_lens: int64 (N,) valid frames.
            targets: N token-id lists, or an int (N, U) padded tensor with ``y_lens``.
            y_lens: int64 (N,) target lengths (required with a tensor of targets).
            loss_config: pruned or full loss and its weights; default
                ``TransducerLossConfig()``.
            step: training step (pruned loss warm-up, see
                :func:`speechfm.losses.transducer.loss_scales`).
            utt_ids: utterance names for error messages.
            kwargs: passed to :meth:`encode` (chunk_size, left_context, language, adapters).

        Returns:
            loss: scalar (float32), the weighted losses summed over the utterances that count.
            stats: sums over those utterances, ready for a trainer's logs: ``loss``,
            ``simple_loss`` and ``pruned_loss`` (kind "pruned", unweighted) or ``full_loss``,
            ``ctc_loss`` (unweighted, with ``ctc_scale`` > 0),
            ``simple_scale``/``pruned_scale`` (the weights used), ``num_utts``,
            ``num_infinite`` (utterances left out), ``num_frames`` (encoder frames),
            ``num_input_frames``, ``num_tokens``.

        Raises:
            DataError: an utterance too short for the front end (0 encoder frames) or with
                bad targets; the message names it.
        """
        config = TransducerLossConfig() if loss_config is None else loss_config
        if config.ctc_scale > 0 and self.ctc_output is None:
            raise ValueError(
                f"transducer_loss.ctc_scale is {config.ctc_scale} but the model has no CTC head: "
                "build it with ctc_head: true"
            )
        if isinstance(targets, torch.Tensor):
            if y_lens is None:
                raise ValueError("y_lens is required when targets is a tensor")
            padded, lens = targets, y_lens
        else:
            padded, lens = pad_targets(targets)
        enc, enc_lens = self.encode(feats, x_lens, **kwargs)
        empty = torch.nonzero(enc_lens < 1).flatten().tolist()
        if empty:
            i = empty[0]
            name = f"utterance {utt_ids[i]!r}" if utt_ids is not None else f"utterance {i}"
            raise DataError(
                f"{name}: {int(x_lens[i])} feature frames give 0 encoder frames (too short for "
                "the front end); drop it from the data or pad the audio"
            )
        out = transducer_loss(
            enc,
            enc_lens,
            padded.to(enc.device),
            lens.to(enc.device),
            predictor=self.predictor,
            joiner=self.joiner,
            simple_am_proj=self.simple_am_proj,
            simple_lm_proj=self.simple_lm_proj,
            config=config,
            step=step,
            blank_id=self.blank_id,
            utt_ids=utt_ids,
        )
        keep = out.finite
        loss, per_utt = out.loss, out.per_utt
        ctc_per = None
        if config.ctc_scale > 0:
            from speechfm.losses.ctc import ctc_loss

            log_probs = torch.log_softmax(self.ctc_output(enc).float(), dim=-1)
            # Utterances CTC cannot align (more labels + repeats than frames) add 0.
            ctc, ctc_per = ctc_loss(
                log_probs, enc_lens, padded.to(enc.device), lens.to(enc.device),
                blank=self.blank_id, reduction="none", zero_infinity=True, utt_ids=utt_ids,
            )
            mask = keep.to(ctc.device)
            loss = loss + config.ctc_scale * ctc[mask].sum()
            per_utt = per_utt + config.ctc_scale * ctc.detach().to(per_utt.device)
        stats = {
            "loss": float(per_utt[keep].sum()),
            "num_utts": float(keep.sum()),
            "num_infinite": float((~keep).sum()),
            "num_frames": float(enc_lens[keep.to(enc_lens.device)].sum()),
            "num_input_frames": float(x_lens[keep.to(x_lens.device)].sum()),
            "num_tokens": float(lens[keep.to(lens.device)].sum()),
            "simple_scale": out.simple_scale,
            "pruned_scale": out.pruned_scale,
        }
        for name, part in (
            ("simple_loss", out.simple),
            ("pruned_loss", out.pruned),
            ("full_loss", out.full),
        ):
            if part is not None:
                stats[name] = float(part[keep].sum())
        if ctc_per is not None:
            finite_ctc = keep & torch.isfinite(ctc_per).to(keep.device)
            stats["ctc_loss"] = float(ctc_per[finite_ctc.to(ctc_per.device)].sum())
        return loss, stats
