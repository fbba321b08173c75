"""Configuration of the transducer ASR model (Conformer encoder + stateless predictor + joiner).

The model is icefall's "pruned stateless transducer": the prediction network sees only the
last ``context_size`` tokens (an embedding and a 1-D convolution, no recurrence), and the
joiner adds projected encoder and predictor vectors, applies tanh and a linear layer to the
vocabulary. Like the CTC family the config carries the feature settings (``fbank``), so a
checkpoint's config.json alone says how to turn audio into the model's input; the CMVN
statistics travel in the weights file as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from speechfm.features.fbank import FbankConfig
from speechfm.models.conformer.config import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)

__all__ = [
    "FAMILY",
    "TransducerModelConfig",
    "transducer_base",
    "transducer_large",
    "transducer_small",
    "transducer_tiny",
]

FAMILY = "transducer"
"""Value of the ``"family"`` key :meth:`TransducerModelConfig.to_dict` writes."""


@dataclass(kw_only=True)
class TransducerModelConfig:
    """Everything needed to build a :class:`~speechfm.models.transducer.TransducerModel`."""

    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    """The Conformer encoder; ``encoder.input_dim`` must equal ``fbank.feature_dim``."""
    vocab_size: int
    """Output vocabulary V, blank included: the tokenizer's ``vocab_size``."""
    fbank: FbankConfig = field(default_factory=FbankConfig)
    """Feature settings of the model's input (used by ``feature_extractor()``)."""
    use_cmvn: bool = True
    """Normalise features with global mean/variance buffers (set them with ``set_cmvn``)."""
    blank_id: int = 0
    """Id of the blank (0 in every speechfm tokenizer); also the predictor's start context."""
    decoder_dim: int = 512
    """Predictor (stateless decoder) embedding size."""
    context_size: int = 2
    """Tokens the predictor sees: 1 = bigram-like (embedding only), 2 = trigram-like, ..."""
    joiner_dim: int = 512
    """Joiner hidden size: encoder and predictor are projected to it and added."""
    ctc_head: bool = False
    """Add a linear CTC output layer on the encoder, trained with the auxiliary CTC loss
    (``transducer_loss.ctc_scale``; icefall's ``--use-ctc``). Search does not use it."""
    specaugment: bool = True
    """Apply SpecAugment to the (normalised) features in training mode."""
    specaug_num_freq_masks: int = 2
    """SpecAugment: frequency masks per utterance."""
    specaug_freq_mask_width: int = 27
    """SpecAugment: widest frequency mask, in feature channels."""
    specaug_num_time_masks: int = 10
    """SpecAugment: most time masks per utterance."""
    specaug_time_mask_multiplicity: float = 0.04
    """SpecAugment: an utterance of L frames gets min(num_time_masks, floor(this * L)) masks."""
    specaug_time_mask_max_frac: float = 0.05
    """SpecAugment: a time mask spans at most this fraction of the utterance."""
    specaug_time_warp: int = 0
    """SpecAugment: largest time-warp distance in frames (0 = no warping)."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if not isinstance(self.encoder, ConformerConfig):
            raise ValueError(f"encoder must be a ConformerConfig, got {type(self.encoder)}")
        if not isinstance(self.fbank, FbankConfig):
            raise ValueError(f"fbank must be an FbankConfig, got {type(self.fbank)}")
        self.encoder.validate()
        self.fbank.validate()
        if self.encoder.input_dim != self.fbank.feature_dim:
            raise ValueError(
                f"encoder.input_dim ({self.encoder.input_dim}) must equal the fbank feature "
                f"dimension ({self.fbank.feature_dim})"
            )
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one token), got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id must be in [0, {self.vocab_size}), got {self.blank_id}")
        for name in ("decoder_dim", "joiner_dim", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "specaug_num_freq_masks",
            "specaug_freq_mask_width",
            "specaug_num_time_masks",
            "specaug_time_warp",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.specaug_time_mask_multiplicity < 0:
            raise ValueError(
                "specaug_time_mask_multiplicity must be >= 0, got "
                f"{self.specaug_time_mask_multiplicity}"
            )
        if not 0.0 <= self.specaug_time_mask_max_frac <= 1.0:
            raise ValueError(
                f"specaug_time_mask_max_frac must be in [0, 1], got {self.specaug_time_mask_max_frac}"
            )

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames (fbank shift x subsampling)."""
        return self.fbank.frame_shift * self.encoder.subsampling_factor

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (nested configs as dicts, plus ``"family": "transducer"``)."""
        out: dict[str, Any] = {"family": FAMILY}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if f.name in ("encoder", "fbank") else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransducerModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass)."""
        data = dict(data)
        family = data.pop("family", FAMILY)
        if family != FAMILY:
            raise ValueError(
                f"not a transducer model config: family is {family!r}, expected {FAMILY!r}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TransducerModelConfig fields: {unknown}")
        if "encoder" in data:
            data["encoder"] = ConformerConfig.from_dict(data["encoder"])
        if "fbank" in data:
            data["fbank"] = FbankConfig.from_dict(data["fbank"])
        config = cls(**data)
        config.validate()
        return config


def transducer_tiny(vocab_size: int) -> TransducerModelConfig:
    """Tens-of-thousands-parameter model (``conformer_tiny``) for unit tests and smoke runs."""
    return TransducerModelConfig(
        encoder=conformer_tiny(),
        vocab_size=vocab_size,
        decoder_dim=16,
        joiner_dim=32,
        specaug_freq_mask_width=10,
        specaug_num_time_masks=2,
    )


def transducer_small(vocab_size: int) -> TransducerModelConfig:
    """~20M-parameter encoder (``conformer_small``: 12 x 256) with a 256-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=conformer_small(), vocab_size=vocab_size, decoder_dim=256, joiner_dim=256
    )


def transducer_base(vocab_size: int) -> TransducerModelConfig:
    """~100M-parameter encoder (``conformer_base``: 16 x 512) with a 512-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=conformer_base(), vocab_size=vocab_size, decoder_dim=512, joiner_dim=512
    )


def transducer_large(vocab_size: int) -> TransducerModelConfig:
    """w2v-BERT-2.0-sized encoder (``conformer_large``: 24 x 1024) with a 640-dim joiner.

    Its causal convolutions make it streamable with chunked attention.
    """
    return TransducerModelConfig(
        encoder=conformer_large(), vocab_size=vocab_size, decoder_dim=512, joiner_dim=640
    )
