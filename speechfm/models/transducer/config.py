"""Configuration of the transducer ASR model (Conformer encoder + stateless predictor + joiner).

The model is icefall's "pruned stateless transducer": the prediction network sees only the
last ``context_size`` tokens (an embedding and a 1-D convolution, no recurrence), and the
joiner adds projected encoder and predictor vectors, applies tanh and a linear layer to the
vocabulary. Like every family the config carries the shared front end's settings (``encoder``), so a
model directory's config.json alone says how to turn audio into the model's input; the
CMVN statistics travel in the weights file as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.specaug import SpecAugmentConfig
from speechfm.models.conformer.config import (
    ConformerConfig,
    conformer_base,
    conformer_large,
    conformer_small,
    conformer_tiny,
)
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

__all__ = [
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

    family: ClassVar[str] = "transducer"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer)."""
    vocab_size: int
    """Output vocabulary V, blank included: the tokenizer's ``vocab_size``."""
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
    second_encoder: ConformerConfig | None = None
    """A cascaded encoder: a non-causal Conformer stacked on the (causal, streaming) first
    encoder's output for a final pass over the whole utterance; both passes share the
    predictor and joiner and train jointly (``transducer_loss.first_pass_scale`` /
    ``final_pass_scale``). Its front end must be ``stack`` with factor 1 (a projection of
    the first encoder's frames), its ``input_dim`` and ``dim`` the first encoder's width,
    and it has full context (no chunks). None = one encoder."""
    adapters: list[dict[str, Any]] = field(default_factory=list)
    """Adapters built with the model (so their weights load with it): each ``{"name",
    "kind", "points", "options", "layers", "languages", "encoders"}``; ``languages`` makes
    one adapter per language (language-dependent adapters, run only for that language),
    ``encoders`` says which of "first" / "second" hold it (default: every encoder)."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        if self.second_encoder is not None:
            second, width = self.second_encoder, self.encoder.conformer.output_dim
            second.validate()
            if second.front_end != "stack" or second.subsampling_factor != 1:
                raise ValueError("second_encoder needs front_end: stack with subsampling_factor "
                                 f"1, got {second.front_end} x{second.subsampling_factor}")
            if second.input_dim != width or second.dim != width:
                raise ValueError(f"second_encoder input_dim and dim must be the first encoder's "
                                 f"width {width}, got {second.input_dim} and {second.dim}")
            if second.chunk_size > 0 or second.dynamic_chunk or second.length_adapter:
                raise ValueError("second_encoder is the full-context final pass: no chunk_size, "
                                 "dynamic_chunk or length_adapter")
        from speechfm.nn.adapters import CONFORMER_POINTS, check_adapter_specs

        plain = []
        for i, spec in enumerate(self.adapters):
            if not isinstance(spec, dict):
                raise ValueError(f"adapters[{i}] must be a mapping, got {spec!r}")
            langs = spec.get("languages")
            if langs is not None and (not isinstance(langs, list) or not langs):
                raise ValueError(f"adapters[{i}].languages must be a non-empty list or null")
            encoders = spec.get("encoders") or ["first", "second"]
            if not set(encoders) <= {"first", "second"}:
                raise ValueError(f"adapters[{i}].encoders must name first and/or second, "
                                 f"got {encoders}")
            if "second" in encoders and spec.get("encoders") and self.second_encoder is None:
                raise ValueError(f"adapters[{i}] asks for the second encoder; there is none")
            plain.append({k: v for k, v in spec.items() if k not in ("languages", "encoders")})
        check_adapter_specs(plain, CONFORMER_POINTS)
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one token), got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id must be in [0, {self.vocab_size}), got {self.blank_id}")
        for name in ("decoder_dim", "joiner_dim", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def frame_shift_s(self) -> float:
        """Seconds between two encoder output frames (fbank shift x subsampling)."""
        return self.encoder.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransducerModelConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def transducer_tiny(vocab_size: int) -> TransducerModelConfig:
    """Tens-of-thousands-parameter model (``conformer_tiny``) for unit tests and smoke runs."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(
            conformer=conformer_tiny(),
            specaug=SpecAugmentConfig(freq_mask_width=10, num_time_masks=2),
        ),
        vocab_size=vocab_size,
        decoder_dim=16,
        joiner_dim=32,
    )


def transducer_small(vocab_size: int) -> TransducerModelConfig:
    """~20M-parameter encoder (``conformer_small``: 12 x 256) with a 256-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_small()), vocab_size=vocab_size, decoder_dim=256, joiner_dim=256
    )


def transducer_base(vocab_size: int) -> TransducerModelConfig:
    """~100M-parameter encoder (``conformer_base``: 16 x 512) with a 512-dim predictor/joiner."""
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_base()), vocab_size=vocab_size, decoder_dim=512, joiner_dim=512
    )


def transducer_large(vocab_size: int) -> TransducerModelConfig:
    """w2v-BERT-2.0-sized encoder (``conformer_large``: 24 x 1024) with a 640-dim joiner.

    Its causal convolutions make it streamable with chunked attention.
    """
    return TransducerModelConfig(
        encoder=SpeechEncoderConfig(conformer=conformer_large()), vocab_size=vocab_size, decoder_dim=512, joiner_dim=640
    )
