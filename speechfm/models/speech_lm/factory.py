"""Building speech LMs: from a :class:`SpeechLMConfig` (fresh weights; what loading a model
directory does before its weights go in), or around a local causal-LM checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig, create_speech_encoder
from speechfm.models.speech_lm.config import SpeechLMConfig, lm_config_dict
from speechfm.models.speech_lm.model import SpeechLM

__all__ = ["build_causal_lm", "create_speech_lm_model", "speech_lm_from_pretrained_lm"]


def build_causal_lm(lm: Mapping[str, Any]) -> nn.Module:
    """A transformers causal LM with fresh weights, in float32, from a config dict
    (``PretrainedConfig.to_dict()``; ``model_type`` picks the class)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(lm)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    # float32 master weights whatever dtype the source checkpoint had; casting for
    # inference is speechfm.load(dtype=)'s job.
    return AutoModelForCausalLM.from_config(config).float()


def create_speech_lm_model(config: SpeechLMConfig) -> SpeechLM:
    """Validate ``config`` and build the model (fresh weights everywhere)."""
    config.validate()
    return SpeechLM(create_speech_encoder(config.encoder), build_causal_lm(config.lm),
                    stack=config.stack, adaptor_dim=config.adaptor_dim,
                    freeze_encoder=config.freeze_encoder)


def speech_lm_from_pretrained_lm(
    lm_dir: str | os.PathLike,
    *,
    encoder_source: str | os.PathLike | SpeechEncoderConfig,
    stack: int = 4,
    adaptor_dim: int = 1024,
    freeze_encoder: bool = True,
) -> tuple[SpeechLM, SpeechLMConfig, Any]:
    """Plug a local causal-LM checkpoint (and its tokenizer) into a speech LM.

    The LM's config dict goes into the returned :class:`SpeechLMConfig`, so the speechfm
    model directory saved from this model (with the tokenizer as its ``lm_tokenizer``
    part) rebuilds everything without ``lm_dir``.

    Args:
        lm_dir: a transformers checkpoint folder (``save_pretrained`` of a causal LM and
            of its tokenizer); read with ``local_files_only=True``.
        encoder_source: a speechfm model directory (CTC, transducer, w2v-BERT, Whistle,
            classifier, ...) whose encoder config and ``encoder.*`` weights are taken, or
            a :class:`SpeechEncoderConfig` for a fresh encoder.
        stack, adaptor_dim, freeze_encoder: as in :class:`SpeechLMConfig`.

    Returns:
        ``(model, config, tokenizer)``.

    Raises:
        DataError: ``encoder_source`` is not a model directory with an encoder.
        ValueError: the tokenizer has more tokens than the LM's vocabulary.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechfm.models.io import init_weights, read_encoder_config

    lm = AutoModelForCausalLM.from_pretrained(str(lm_dir), local_files_only=True).float()
    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir), local_files_only=True)
    vocab = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(f"{lm_dir}: the tokenizer has {len(tokenizer)} tokens, the LM only "
                         f"{vocab} embeddings")
    source = None if isinstance(encoder_source, SpeechEncoderConfig) else encoder_source
    encoder = (encoder_source if isinstance(encoder_source, SpeechEncoderConfig)
               else read_encoder_config(encoder_source))
    config = SpeechLMConfig(encoder=encoder, stack=stack, adaptor_dim=adaptor_dim,
                            lm=lm_config_dict(lm.config), freeze_encoder=freeze_encoder)
    config.validate()
    model = SpeechLM(create_speech_encoder(encoder), lm, stack=stack, adaptor_dim=adaptor_dim,
                     freeze_encoder=freeze_encoder)
    if source is not None:
        init_weights(model, source, ("encoder.",))
    return model, config, tokenizer
