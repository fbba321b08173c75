"""The shared speech front end: waveform -> fbank -> normalisation -> SpecAugment -> Conformer.

Every model family holds one :class:`SpeechEncoder` as its ``encoder`` attribute (CTC,
transducer, self-supervised and classification families alike) and reads the sample rate,
feature settings, frame shift and encoder outputs from it; no family borrows another's
methods. Its settings are a :class:`SpeechEncoderConfig`:

- ``fbank``: Kaldi-compatible fbank (80 or 128 bins, any rate);
- ``normalization``: "global" (CMVN statistics kept as buffers and saved with the weights),
  "utterance" (each utterance's own mean/variance over its valid frames, as AST and
  wav2vec-style models do; ``utterance_norm_ddof`` / ``utterance_norm_eps`` set the
  variance divisor and epsilon), or "none";
- ``specaugment`` / ``specaug``: masking applied in training mode only;
- ``conformer``: the Conformer (:class:`~speechfm.models.conformer.ConformerConfig`) whose
  ``front_end`` says how frames become encoder inputs: 2-D convolution subsampling, VGG,
  frame stacking (w2v-BERT's stride 2) or spectrogram patches.

Weights: ``cmvn.*`` buffers (global normalisation) and ``conformer.*``; the fbank and
SpecAugment modules hold none.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from speechfm.features.fbank import FbankConfig, TorchFbank
from speechfm.features.specaug import SpecAugment, SpecAugmentConfig
from speechfm.models.conformer.config import ConformerConfig
from speechfm.models.conformer.model import ConformerEncoder

log = logging.getLogger("speechfm.models")

__all__ = ["NORMALIZATIONS", "SpeechEncoder", "SpeechEncoderConfig", "create_speech_encoder"]

NORMALIZATIONS = ("global", "utterance", "none")


@dataclass(kw_only=True)
class SpeechEncoderConfig:
    """Everything needed to build a :class:`SpeechEncoder`."""

    fbank: FbankConfig = field(default_factory=FbankConfig)
    """Feature settings of the model's input (the model computes them from waveforms)."""
    normalization: str = "global"
    """Feature normalisation: "global" (CMVN buffers, set from training statistics),
    "utterance" (per-utterance mean and variance over its valid frames) or "none"."""
    utterance_norm_ddof: int = 0
    """With "utterance" normalisation: the variance divides by (valid frames - ddof); 0 is
    the population variance, 1 the unbiased one that ``SeamlessM4TFeatureExtractor``
    (w2v-BERT 2.0) uses."""
    utterance_norm_eps: float = 1e-5
    """With "utterance" normalisation: added to the variance before the square root
    (``SeamlessM4TFeatureExtractor``: 1e-7)."""
    specaugment: bool = True
    """Apply SpecAugment (``specaug``) to the normalised features in training mode."""
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """SpecAugment settings."""
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    """The Conformer; ``conformer.input_dim`` must equal ``fbank.feature_dim``."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"encoder.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.utterance_norm_ddof not in (0, 1):
            raise ValueError(
                f"encoder.utterance_norm_ddof must be 0 or 1, got {self.utterance_norm_ddof}"
            )
        if not self.utterance_norm_eps >= 0:
            raise ValueError(
                f"encoder.utterance_norm_eps must be >= 0, got {self.utterance_norm_eps}"
            )
        self.fbank.validate()
        self.specaug.validate()
        self.conformer.validate()
        if self.conformer.input_dim != self.fbank.feature_dim:
            raise ValueError(
                f"encoder.conformer.input_dim ({self.conformer.input_dim}) must equal the fbank "
                f"feature dimension ({self.fbank.feature_dim})"
            )

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames (fbank shift x subsampling, length
        adapter included)."""
        return self.fbank.frame_shift * self.conformer.output_subsampling_factor


def create_speech_encoder(config: SpeechEncoderConfig) -> SpeechEncoder:
    """Validate ``config`` and build the front end it describes.

    With global normalisation the CMVN buffers start as the identity (mean 0, variance 1);
    fill them with :meth:`SpeechEncoder.set_cmvn` before training, or load weights.
    """
    from speechfm.features.cmvn import GlobalCMVN
    from speechfm.models.conformer.factory import create_conformer_encoder

    config.validate()
    dim = config.fbank.feature_dim
    cmvn = None
    if config.normalization == "global":
        # On the CPU: the statistics go through NumPy, also under a meta-device context
        # (sizing a large model without allocating it).
        with torch.device("cpu"):
            cmvn = GlobalCMVN(torch.zeros(dim, dtype=torch.float64),
                              torch.ones(dim, dtype=torch.float64))
    return SpeechEncoder(
        create_conformer_encoder(config.conformer),
        fbank=TorchFbank(config.fbank),
        normalization=config.normalization,
        cmvn=cmvn,
        specaugment=config.specaug.build() if config.specaugment else None,
        subsampling_factor=config.conformer.output_subsampling_factor,
        utterance_norm_ddof=config.utterance_norm_ddof,
        utterance_norm_eps=config.utterance_norm_eps,
    )


class SpeechEncoder(nn.Module):
    """Features in, encoder frames out: normalisation, SpecAugment and the Conformer.

    Args:
        conformer: the encoder, (N, T, F) normalised features -> (N, T', C).
        fbank: the feature extractor matching the encoder input (no weights); waveforms
            go through :meth:`feature_extractor` first.
        normalization: "global" (needs ``cmvn``), "utterance" or "none".
        cmvn: global CMVN statistics as buffers (``normalization="global"``).
        specaugment: applied after normalisation in training mode only; None = off.
        subsampling_factor: feature frames per encoder frame (for :attr:`frame_shift_s`).
        utterance_norm_ddof, utterance_norm_eps: variance divisor (frames - ddof) and
            epsilon of ``normalization="utterance"``.
    """

    def __init__(
        self,
        conformer: ConformerEncoder,
        *,
        fbank: TorchFbank,
        normalization: str = "global",
        cmvn: nn.Module | None = None,
        specaugment: SpecAugment | None = None,
        subsampling_factor: int = 4,
        utterance_norm_ddof: int = 0,
        utterance_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if (normalization == "global") != (cmvn is not None):
            raise ValueError("global normalization needs cmvn buffers, and only it takes them")
        self.fbank = fbank
        self.cmvn = cmvn
        self.specaugment = specaugment
        self.conformer = conformer
        self.normalization = normalization
        self.subsampling_factor = subsampling_factor
        self.utterance_norm_ddof = int(utterance_norm_ddof)
        self.utterance_norm_eps = float(utterance_norm_eps)

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """C, the width of the encoder output (a length adapter's, if the Conformer has one)."""
        return self.conformer.output_dim

    @property
    def num_layers(self) -> int:
        """Conformer blocks."""
        return self.conformer.num_layers

    @property
    def feature_dim(self) -> int:
        """F, the fbank feature dimension the encoder takes."""
        return self.fbank.config.feature_dim

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz that waveforms must have."""
        return self.fbank.config.sample_rate

    @property
    def frame_shift_s(self) -> float:
        """Seconds between encoder output frames (fbank shift x subsampling)."""
        return self.fbank.config.frame_shift * self.subsampling_factor

    @property
    def chunk_size(self) -> int:
        """The Conformer's configured attention chunk in encoder frames (-1 = full context)."""
        return self.conformer.chunk_size

    def feature_extractor(self) -> TorchFbank:
        """The :class:`TorchFbank` computing this encoder's input features from waveforms."""
        return self.fbank

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """int64 (N,) encoder frames for ``x_lens`` feature frames (no forward needed)."""
        return self.conformer.output_lengths(x_lens)

    def layer_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """int64 (N,) frames of the Conformer blocks' outputs (``return_layers``) for
        ``x_lens`` feature frames: :meth:`output_lengths` unless a length adapter follows
        the blocks."""
        return self.conformer.layer_lengths(x_lens)

    # ------------------------------------------------------------------ normalisation

    def set_cmvn(self, mean, var, *, var_floor: float | None = None) -> None:
        """Overwrite the global CMVN statistics in place (they are saved with the weights).

        Args:
            mean: (F,) per-channel feature mean (array, list or tensor).
            var: (F,) per-channel variance (>= 0).
            var_floor: floor on ``var`` before 1/sqrt; default: the module's.

        Raises:
            ValueError: the encoder does not use global normalisation, or the sizes/values
                are wrong.
        """
        if self.cmvn is None:
            raise ValueError(
                f"this encoder normalises with {self.normalization!r}; it has no CMVN buffers "
                "(set encoder.normalization: global to use global statistics)"
            )
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

    def load_cmvn(self, path: str | None) -> bool:
        """Set the global CMVN statistics from a ``speechfm features cmvn`` JSON file.

        Args:
            path: the file; None leaves the buffers as they are (logging a warning when
                the encoder normalises globally: its CMVN then stays the identity).

        Returns:
            True when statistics were loaded.
        """
        if path is None:
            if self.cmvn is not None:
                log.warning("no cmvn file given: the encoder's global CMVN stays the identity")
            return False
        from speechfm.features.cmvn import GlobalCMVN

        stats = GlobalCMVN.load(path)
        self.set_cmvn(stats.mean, stats.var, var_floor=stats.var_floor)
        return True

    def normalize(self, feats: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        """Normalisation, then SpecAugment when training: what the Conformer sees.

        (N, T, F) -> (N, T, F); with global or per-utterance normalisation padded frames
        come out as 0 (the Conformer ignores padding either way).
        """
        x = feats
        if self.cmvn is not None:
            x = self.cmvn(x, x_lens)
        elif self.normalization == "utterance":
            x = _utterance_normalize(
                x, x_lens, eps=self.utterance_norm_eps, ddof=self.utterance_norm_ddof
            )
        if self.specaugment is not None and self.training:
            x = self.specaugment(x, x_lens)
        return x

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        feats: torch.Tensor,
        x_lens: torch.Tensor,
        *,
        return_layers: Sequence[int] | None = None,
        chunk_size: int | None = None,
        left_context: int | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
        frame_hook: Any = None,
    ):
        """Encoder output of a padded batch of features.

        Args:
            feats: (N, T, F) fbank features (not normalised: that happens here).
            x_lens: int64 (N,) valid frames.
            return_layers: also return these layers (0 = front-end output, i = block i,
                negative from the end; see :meth:`ConformerEncoder.forward`).
            chunk_size, left_context: attention chunking (encoder frames); None = the
                Conformer's own setting (dynamic chunks in training when configured).
            language, adapters: select language-keyed / named adapters.
            frame_hook: ``f(x, x_lens) -> x`` on the front-end output before the blocks
                (masking in self-supervised recipes; see :meth:`ConformerEncoder.forward`).

        Returns:
            out: (N, T', C), zero on padding; out_lens: int64 (N,); and with
            ``return_layers`` a list of (N, T', C) layer outputs.
        """
        return self.conformer(
            self.normalize(feats, x_lens),
            x_lens,
            chunk_size=chunk_size,
            left_context=left_context,
            return_layers=return_layers,
            language=language,
            adapters=adapters,
            frame_hook=frame_hook,
        )

    def forward_waveforms(
        self,
        wavs: torch.Tensor,
        lens: torch.Tensor | None = None,
        *,
        sample_rate: int | None = None,
        **kwargs: Any,
    ):
        """Waveforms -> encoder output in one call (fbank, normalisation, Conformer).

        Args:
            wavs: float (N, S) samples in [-1, 1] at :attr:`sample_rate`.
            lens: int64 (N,) valid samples; default S for every row.
            sample_rate: rate of ``wavs`` in Hz if known; a mismatch is an error (resample
                first, e.g. with soxr).
            kwargs: passed to :meth:`forward`.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(
                f"waveforms at {sample_rate} Hz given to a model expecting {self.sample_rate} Hz; "
                "resample them first"
            )
        feats, feat_lens = self.fbank(wavs, lens)
        return self(feats, feat_lens, **kwargs)

    # ------------------------------------------------------------------ streaming

    def init_streaming_state(self, batch_size: int, **kwargs: Any):
        """Cached state for :meth:`streaming_forward` (see
        :meth:`ConformerEncoder.init_streaming_state`).

        Raises:
            ValueError: per-utterance normalisation needs the whole utterance.
        """
        if self.normalization == "utterance":
            raise ValueError("an encoder with per-utterance normalisation cannot stream "
                             "(the statistics need the whole utterance)")
        return self.conformer.init_streaming_state(batch_size, **kwargs)

    def frames_to_next_chunk(self, state) -> int:
        """Feature frames :meth:`streaming_forward` still needs before its next chunk (see
        :meth:`ConformerEncoder.frames_to_next_chunk`)."""
        return self.conformer.frames_to_next_chunk(state)

    def streaming_forward(self, feats: torch.Tensor, state, x_lens: torch.Tensor | None = None,
                          **kwargs: Any):
        """The next (N, t, F) feature frames of N streams through the cached encoder.

        Global CMVN is per frame, so normalising a piece equals normalising the whole.
        Arguments and result ``(out (N, t', C), out_lens, state)`` as
        :meth:`ConformerEncoder.streaming_forward` (``x_lens``, ``final``, ``language``,
        ``adapters``).

        Raises:
            ValueError: per-utterance normalisation needs the whole utterance.
        """
        if self.normalization == "utterance":
            raise ValueError("an encoder with per-utterance normalisation cannot stream "
                             "(the statistics need the whole utterance)")
        x = self.cmvn(feats) if self.cmvn is not None else feats
        return self.conformer.streaming_forward(x, state, x_lens, **kwargs)


def _utterance_normalize(
    x: torch.Tensor, x_lens: torch.Tensor, eps: float = 1e-5, ddof: int = 0
) -> torch.Tensor:
    """Per-utterance, per-channel mean/variance normalisation over the valid frames.

    The variance divides by (valid frames - ``ddof``), at least 1 (a one-frame utterance
    with ``ddof=1`` gets variance 0, where numpy would give NaN).
    """
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < x_lens.to(x.device)[:, None])
    mask = valid.unsqueeze(-1).to(x.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (x * mask).sum(dim=1, keepdim=True) / count
    denom = count if ddof == 0 else (count - ddof).clamp(min=1.0)
    var = (((x - mean) * mask) ** 2).sum(dim=1, keepdim=True) / denom
    return ((x - mean) * torch.rsqrt(var + eps)) * mask
