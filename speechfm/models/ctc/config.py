"""Configuration of the CTC ASR model (Conformer encoder + linear head), and its named sizes.

The config carries the feature settings (``fbank``) so that a checkpoint's config.json
alone says how to turn audio into the model's input; the CMVN statistics travel in the
weights file as buffers.
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
    "CtcModelConfig",
    "ctc_base",
    "ctc_large",
    "ctc_small",
    "ctc_tiny",
]

FAMILY = "ctc"
"""Value of the ``"family"`` key :meth:`CtcModelConfig.to_dict` writes (lets a loader pick
the model family from config.json)."""


@dataclass(kw_only=True)
class CtcModelConfig:
    """Everything needed to build a :class:`~speechfm.models.ctc.CtcModel`."""

    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    """The Conformer encoder; ``encoder.input_dim`` must equal ``fbank.feature_dim``."""
    vocab_size: int
    """Output vocabulary V, blank (id 0) included: the tokenizer's ``vocab_size``."""
    fbank: FbankConfig = field(default_factory=FbankConfig)
    """Feature settings of the model's input (used by ``feature_extractor()``)."""
    use_cmvn: bool = True
    """Normalise features with global mean/variance buffers (set them with ``set_cmvn``)."""
    head_dropout: float = 0.1
    """Dropout on the encoder output before the output projection."""
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
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
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
        """JSON-serialisable dict (nested configs as dicts, plus ``"family": "ctc"``)."""
        out: dict[str, Any] = {"family": FAMILY}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if f.name in ("encoder", "fbank") else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CtcModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass)."""
        data = dict(data)
        family = data.pop("family", FAMILY)
        if family != FAMILY:
            raise ValueError(f"not a CTC model config: family is {family!r}, expected {FAMILY!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CtcModelConfig fields: {unknown}")
        if "encoder" in data:
            data["encoder"] = ConformerConfig.from_dict(data["encoder"])
        if "fbank" in data:
            data["fbank"] = FbankConfig.from_dict(data["fbank"])
        config = cls(**data)
        config.validate()
        return config


def ctc_tiny(vocab_size: int) -> CtcModelConfig:
    """Few-thousand-parameter model (``conformer_tiny``) for unit tests and smoke runs."""
    return CtcModelConfig(
        encoder=conformer_tiny(),
        vocab_size=vocab_size,
        head_dropout=0.0,
        specaug_freq_mask_width=10,
        specaug_num_time_masks=2,
    )


def ctc_small(vocab_size: int) -> CtcModelConfig:
    """~20M-parameter encoder (``conformer_small``: 12 x 256)."""
    return CtcModelConfig(encoder=conformer_small(), vocab_size=vocab_size)


def ctc_base(vocab_size: int) -> CtcModelConfig:
    """~100M-parameter encoder (``conformer_base``: 16 x 512)."""
    return CtcModelConfig(encoder=conformer_base(), vocab_size=vocab_size)


def ctc_large(vocab_size: int) -> CtcModelConfig:
    """w2v-BERT-2.0-sized encoder (``conformer_large``: 24 x 1024, stacked fbank)."""
    return CtcModelConfig(encoder=conformer_large(), vocab_size=vocab_size, head_dropout=0.0)
