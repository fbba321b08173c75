"""Configuration of the speech language model (speech encoder -> frame-stacking adaptor ->
decoder-only causal LM built with transformers), and its named sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.features.specaug import SpecAugmentConfig
from speechfm.models.conformer.config import conformer_small, conformer_tiny
from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

__all__ = ["SpeechLMConfig", "lm_config_dict", "llama_lm_config", "speech_lm_small",
           "speech_lm_tiny"]


@dataclass(kw_only=True)
class SpeechLMConfig:
    """Everything needed to build a :class:`~speechfm.models.speech_lm.SpeechLM`."""

    family: ClassVar[str] = "speech_lm"

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    """The shared speech front end (fbank, normalisation, SpecAugment, Conformer): the one
    every speechfm family holds, so any of their checkpoints can start it."""
    stack: int = 4
    """Encoder frames concatenated into one adaptor frame (on top of the encoder's own
    subsampling: 40 ms encoder frames x 4 = one LM position per 160 ms)."""
    adaptor_dim: int = 1024
    """Hidden width of the adaptor MLP (stack x C -> adaptor_dim -> the LM width)."""
    lm: dict[str, Any] = field(default_factory=dict)
    """The causal LM's transformers config as a dict (``PretrainedConfig.to_dict()``; its
    ``model_type`` picks the class), so the model directory rebuilds the LM on its own."""
    freeze_encoder: bool = True
    """Keep the speech encoder fixed (no gradients, always in eval mode: no SpecAugment or
    dropout), which also lets a recipe cache its outputs; False fine-tunes it."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self.encoder.validate()
        if self.stack < 1:
            raise ValueError(f"stack must be >= 1, got {self.stack}")
        if self.adaptor_dim < 1:
            raise ValueError(f"adaptor_dim must be >= 1, got {self.adaptor_dim}")
        if not isinstance(self.lm.get("model_type"), str) or not self.lm["model_type"]:
            raise ValueError("lm must be a transformers config dict with a model_type "
                             "(e.g. LlamaConfig(...).to_dict())")
        if not isinstance(self.lm.get("vocab_size"), int) or self.lm["vocab_size"] < 1:
            raise ValueError(f"lm.vocab_size must be a positive int, got {self.lm.get('vocab_size')!r}")

    @property
    def frame_shift_s(self) -> float:
        """Seconds of audio per LM position (encoder frame shift x ``stack``)."""
        return self.encoder.frame_shift_s * self.stack

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.json holds under ``"model"``)."""
        from speechfm.config import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeechLMConfig:
        """Inverse of :meth:`to_dict`, validated; unknown keys are an error."""
        from speechfm.config import config_from_dict

        config = config_from_dict(cls, data)
        config.validate()
        return config


def lm_config_dict(lm_config: Any) -> dict[str, Any]:
    """A transformers config as :attr:`SpeechLMConfig.lm` holds it: ``to_dict()`` as JSON
    reads it back (``id2label``'s keys as strings), without its dtype (the family keeps
    float32 weights; ``speechfm.load(dtype=)`` casts)."""
    import json

    data = json.loads(json.dumps(lm_config.to_dict(), default=str))
    for key in ("dtype", "torch_dtype"):
        data.pop(key, None)
    return data


def llama_lm_config(*, vocab_size: int, dim: int, num_layers: int, num_heads: int,
                    ffn_dim: int, max_positions: int = 2048, bos_id: int | None = 1,
                    eos_id: int | None = 2, pad_id: int | None = 0,
                    tie_embeddings: bool = True) -> dict[str, Any]:
    """A Llama-style causal LM config dict (transformers ``LlamaConfig(...).to_dict()``):
    RMSNorm, rotary positions, SwiGLU; the special-token ids are those of
    :func:`~speechfm.models.speech_lm.train_lm_tokenizer` (pad 0, bos 1, eos 2)."""
    from transformers import LlamaConfig

    return lm_config_dict(LlamaConfig(
        vocab_size=vocab_size, hidden_size=dim, intermediate_size=ffn_dim,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_heads, max_position_embeddings=max_positions,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
        tie_word_embeddings=tie_embeddings,
    ))


def speech_lm_tiny(vocab_size: int, encoder: SpeechEncoderConfig | None = None) -> SpeechLMConfig:
    """For tests: a 2 x 64 Llama (4 heads, FFN 128) over ``conformer_tiny`` on 80-bin fbank
    (per-utterance normalisation), stack 2, adaptor width 64.

    Args:
        vocab_size: the text tokenizer's size (``len(tokenizer)``).
        encoder: another encoder config (e.g. :func:`~speechfm.models.io.read_encoder_config`
            of a checkpoint); default the tiny one.
    """
    if encoder is None:
        encoder = SpeechEncoderConfig(
            normalization="utterance", conformer=conformer_tiny(),
            specaug=SpecAugmentConfig(freq_mask_width=10, num_time_masks=2))
    return SpeechLMConfig(
        encoder=encoder, stack=2, adaptor_dim=64,
        lm=llama_lm_config(vocab_size=vocab_size, dim=64, num_layers=2, num_heads=4,
                           ffn_dim=128, max_positions=1024))


def speech_lm_small(vocab_size: int, encoder: SpeechEncoderConfig | None = None) -> SpeechLMConfig:
    """The CPU recipe's size: a 4 x 256 Llama (4 heads, FFN 768, tied embeddings; ~3.4M
    parameters + 256 x vocab) on an encoder of ``conformer_small``'s shape (normally
    replaced by a pretrained checkpoint's encoder), stack 4, adaptor width 512.

    Args:
        vocab_size: the text tokenizer's size (``len(tokenizer)``).
        encoder: the encoder config (e.g. :func:`~speechfm.models.io.read_encoder_config`
            of the checkpoint the recipe starts from); default ``conformer_small``'s.
    """
    if encoder is None:
        encoder = SpeechEncoderConfig(normalization="utterance", conformer=conformer_small())
    return SpeechLMConfig(
        encoder=encoder, stack=4, adaptor_dim=512,
        lm=llama_lm_config(vocab_size=vocab_size, dim=256, num_layers=4, num_heads=4,
                           ffn_dim=768, max_positions=2048))
