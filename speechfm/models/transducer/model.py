"""Transducer ASR model: shared speech encoder -> joiner(encoder, stateless predictor).

Modules:

- :class:`StatelessPredictor`: the prediction network of a "stateless" transducer
  (Ghodsi et al. 2020; icefall's ``Decoder``): an embedding of the last ``context_size``
  tokens mixed by a depthwise 1-D convolution, then ReLU. Its output after ``u`` labels
  depends on labels ``u - context_size .. u - 1`` only (blanks before the start), so search
  can cache it per context and merge hypotheses that agree on their last tokens.
- :class:`Joiner`: ``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))``.
- :class:`TransducerModel`: the shared speech front end (:class:`SpeechEncoder`), the
  predictor, the joiner and the two vocabulary projections of the pruned loss' "simple"
  joiner; ``model(batch)`` is the training loss, ``recognize`` the search, ``stream`` live
  recognition (the family contract of :mod:`speechfm.models.io`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.errors import DataError
from speechfm.losses.ctc import pad_targets
from speechfm.losses.transducer import TransducerLossConfig, transducer_loss
from speechfm.models.ctc.model import model_device

if TYPE_CHECKING:
    from speechfm.decode.ctc import CtcHypothesis
    from speechfm.models.conformer.speech_encoder import SpeechEncoder

__all__ = ["Joiner", "StatelessPredictor", "TransducerModel", "as_ctc_hypothesis"]


def as_ctc_hypothesis(hyp) -> CtcHypothesis:
    """A transducer hypothesis in the CTC hypothesis' shape (each token on one frame), the
    shape the API's timestamps and confidences read."""
    import math

    from speechfm.decode.ctc import CtcHypothesis

    if hyp is None:
        return CtcHypothesis(tokens=[])
    probs = getattr(hyp, "token_log_probs", None) or []
    return CtcHypothesis(tokens=list(hyp.tokens), token_frames=list(hyp.frames),
                         token_end_frames=list(hyp.frames),
                         token_confidences=[math.exp(p) for p in probs], score=float(hyp.score))


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

    def step(self, context: torch.Tensor) -> torch.Tensor:
        """The output for one context per row, as search needs it: ``forward(context,
        need_pad=False)[:, 0]``.

        The depthwise convolution over exactly ``context_size`` embeddings is a per-channel
        weighted sum of them, written out here (one fused multiply-add per tap, in tap
        order, as the convolution kernel accumulates): a convolution call costs tens of
        microseconds of fixed overhead on the CPU, far more than its arithmetic.

        Args:
            context: int (N, context_size) token ids, oldest first.

        Returns:
            (N, D).
        """
        if context.dim() != 2 or context.shape[1] != self.context_size:
            raise ValueError(f"context must be (N, {self.context_size}), got shape "
                             f"{tuple(context.shape)}")
        emb = self.embedding(context)  # (N, c, D)
        if self.conv is None:
            return F.relu(emb[:, 0])
        weight = self.conv.weight[:, 0]  # (D, c)
        out = emb[:, 0] * weight[:, 0]
        for k in range(1, self.context_size):
            out = torch.addcmul(out, emb[:, k], weight[:, k])
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
    """Shared speech encoder + stateless predictor + joiner.

    Args:
        encoder: the shared front end, (N, T, F) fbank features -> (N, T', C).
        predictor: the :class:`StatelessPredictor` (its ``dim`` is D).
        joiner: the :class:`Joiner`.
        vocab_size: V, blank included.
        blank_id: the blank's id (speechfm tokenizers: 0).
        ctc_head: add ``ctc_output``, a linear CTC layer on the encoder output for the
            auxiliary CTC loss (``TransducerLossConfig.ctc_scale``).
        second_encoder: a cascaded encoder: a full-context Conformer on the first
            encoder's output (same width) for the final pass; None = one encoder.

    With a cascade, :meth:`encode` / :meth:`recognize` give the final (cascaded) pass by
    default and the first (causal) pass with ``final_pass=False``; :meth:`stream` runs the
    first pass chunk by chunk; training weights both passes'
    losses (``first_pass_scale`` / ``final_pass_scale`` of the loss config).
    """

    def __init__(
        self,
        encoder: SpeechEncoder,
        predictor: StatelessPredictor,
        joiner: Joiner,
        *,
        vocab_size: int,
        blank_id: int = 0,
        ctc_head: bool = False,
        second_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id {blank_id} outside [0, {vocab_size})")
        if predictor.blank_id != blank_id:
            raise ValueError(f"predictor blank_id {predictor.blank_id} != model's {blank_id}")
        sizes = (predictor.vocab_size, joiner.output_linear.out_features)
        if sizes != (vocab_size, vocab_size):
            raise ValueError(f"predictor / joiner vocabularies {sizes} != vocab_size {vocab_size}")
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        # The pruned loss' additive "simple" joiner: am[t] + lm[u] over the vocabulary.
        self.simple_am_proj = nn.Linear(encoder.dim, vocab_size)
        self.simple_lm_proj = nn.Linear(predictor.dim, vocab_size)
        self.ctc_output = nn.Linear(encoder.dim, vocab_size) if ctc_head else None
        if second_encoder is not None and second_encoder.output_dim != encoder.dim:
            raise ValueError(f"second encoder width {second_encoder.output_dim} != the first "
                             f"encoder's {encoder.dim}")
        self.second_encoder = second_encoder
        self.vocab_size = vocab_size
        self.blank_id = blank_id

    @property
    def context_size(self) -> int:
        """Tokens the predictor sees."""
        return self.predictor.context_size

    @property
    def cascaded(self) -> bool:
        """True with a second (final-pass) encoder."""
        return self.second_encoder is not None

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, *, final_pass: bool = True,
               **kwargs: Any):
        """Encoder output (and layers): :meth:`SpeechEncoder.forward`. What the searches in
        :mod:`speechfm.decode.transducer` take.

        With a cascade the final pass (``final_pass``, the default) feeds the first
        encoder's output through the second; ``chunk_size`` / ``left_context`` apply to the
        first encoder only, ``language`` / ``adapters`` to both. ``return_layers`` returns
        the first encoder's layers (and its output)."""
        if not self.cascaded or not final_pass or kwargs.get("return_layers") is not None:
            return self.encoder(feats, x_lens, **kwargs)
        enc, enc_lens = self.encoder(feats, x_lens, **kwargs)[:2]
        return self.second_pass(enc, enc_lens, language=kwargs.get("language"),
                                adapters=kwargs.get("adapters"))

    def second_pass(self, enc: torch.Tensor, enc_lens: torch.Tensor, *,
                    language: str | None = None, adapters: Any = None):
        """The cascaded encoder over first-pass frames (full context): (out, out_lens)."""
        if self.second_encoder is None:
            raise ValueError("this transducer has no second (cascaded) encoder")
        out, out_lens = self.second_encoder(enc, enc_lens, language=language,
                                            adapters=adapters)[:2]
        return out, out_lens

    def forward(self, batch: Mapping[str, Any], *, step: int,
                loss_config: TransducerLossConfig | None = None, **kwargs: Any
                ) -> tuple[torch.Tensor, float, dict[str, float]]:
        """Training loss of a batch (the family contract).

        Args:
            batch: ``features`` (N, T, F), ``x_lens`` (N,), ``targets`` (N token-id lists),
                ``cut_ids``.
            step: training step (the pruned loss' warm-up).
            loss_config: pruned or full loss and its weights.
            kwargs: passed to the encoder.

        Returns:
            ``(loss summed over utterances, number of target tokens, stats)`` with the
            unweighted loss parts, ``num_utts`` and ``num_infeasible``.
        """
        device = model_device(self)
        if batch["cut_ids"]:
            loss, stats = self.compute_loss(
                batch["features"].to(device), batch["x_lens"].to(device), batch["targets"],
                loss_config=loss_config, step=step, utt_ids=batch["cut_ids"], **kwargs)
        else:
            # Every cut was bad: a zero-weight forward keeps DDP's collectives in step.
            loss, stats = self.compute_loss(
                torch.zeros(1, 32, self.encoder.feature_dim, device=device),
                torch.full((1,), 32, device=device), [[1]], loss_config=loss_config, step=step)
        logged = {k: stats[k] for k in ("simple_loss", "pruned_loss", "full_loss", "ctc_loss",
                                        "first_pass_loss", "final_pass_loss") if k in stats}
        logged.update(num_utts=stats["num_utts"], num_infeasible=stats["num_infinite"])
        if not batch["cut_ids"]:  # the same stats keys as a real batch, all zero
            return loss * 0.0, 0, dict.fromkeys(logged, 0.0)
        return loss, stats["num_tokens"], logged

    def recognize(self, feats: torch.Tensor, x_lens: torch.Tensor, *, method: str = "greedy",
                  beam: int = 4, max_sym_per_frame: int = 1, final_pass: bool = True,
                  **kwargs: Any) -> list[CtcHypothesis]:
        """Best hypothesis per utterance: greedy or modified beam search.

        Args:
            feats, x_lens: (N, T, F) features and int64 (N,) lengths.
            method: "greedy" or "beam" (modified beam search, no LM).
            beam: hypotheses kept.
            max_sym_per_frame: most tokens emitted per encoder frame.
            final_pass: with a cascade, search the final pass (False: the first pass).
            kwargs: passed to the encoder (chunk_size, left_context: chunked attention;
                language, adapters).

        Returns:
            N hypotheses in the CTC hypothesis' shape (each token on one frame).
        """
        from speechfm.decode.transducer import greedy_search, modified_beam_search

        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be greedy or beam, got {method!r}")
        enc, enc_lens = self.encode(feats, x_lens, final_pass=final_pass, **kwargs)[:2]
        if method == "greedy":
            hyps = greedy_search(self, enc, enc_lens, max_sym_per_frame=max_sym_per_frame)
        else:
            hyps = [n[0] if n else None for n in modified_beam_search(
                self, enc, enc_lens, beam=beam, max_sym_per_frame=max_sym_per_frame)]
        return [as_ctc_hypothesis(h) for h in hyps]

    def stream(self, *, method: str = "greedy", beam: int = 4, max_sym_per_frame: int = 1,
               chunk_size: int | None = None, left_context: int | None = None,
               language: str | None = None, adapters: Any = None):
        """A :class:`~speechfm.decode.transducer.TransducerStream` over this model (eval mode):
        feature frames in pieces, chunk-by-chunk search with cached encoder state."""
        from speechfm.decode.transducer import TransducerStream

        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be greedy or beam, got {method!r}")
        return TransducerStream(self, method="greedy" if method == "greedy" else "modified_beam",
                                beam=beam, max_sym_per_frame=max_sym_per_frame,
                                chunk_size=chunk_size, left_context=left_context,
                                language=language, adapters=adapters)

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
        enc, enc_lens = self.encoder(feats, x_lens, **kwargs)[:2]
        empty = torch.nonzero(enc_lens < 1).flatten().tolist()
        if empty:
            i = empty[0]
            name = f"utterance {utt_ids[i]!r}" if utt_ids is not None else f"utterance {i}"
            raise DataError(
                f"{name}: {int(x_lens[i])} feature frames give 0 encoder frames (too short for "
                "the front end); drop it from the data or pad the audio"
            )
        def pass_loss(frames: torch.Tensor):
            return transducer_loss(
                frames,
                enc_lens,
                padded.to(frames.device),
                lens.to(frames.device),
                predictor=self.predictor,
                joiner=self.joiner,
                simple_am_proj=self.simple_am_proj,
                simple_lm_proj=self.simple_lm_proj,
                config=config,
                step=step,
                blank_id=self.blank_id,
                utt_ids=utt_ids,
            )

        first = None
        if self.cascaded:
            final, _ = self.second_pass(enc, enc_lens, language=kwargs.get("language"),
                                        adapters=kwargs.get("adapters"))
            first, out = pass_loss(enc), pass_loss(final)
            # Both passes have the same frames, so an utterance fits both bands or neither.
            keep = first.finite & out.finite
            loss = config.first_pass_scale * first.loss + config.final_pass_scale * out.loss
            per_utt = (config.first_pass_scale * first.per_utt
                       + config.final_pass_scale * out.per_utt)
        else:
            out = pass_loss(enc)
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
        if first is not None:
            stats["first_pass_loss"] = float(first.per_utt.detach()[keep].sum())
            stats["final_pass_loss"] = float(out.per_utt.detach()[keep].sum())
        if ctc_per is not None:
            finite_ctc = keep & torch.isfinite(ctc_per).to(keep.device)
            stats["ctc_loss"] = float(ctc_per[finite_ctc.to(ctc_per.device)].sum())
        return loss, stats
