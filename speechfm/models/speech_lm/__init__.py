"""The speech language-model family (``"speech_lm"``): the shared speech encoder, a
frame-stacking adaptor and a decoder-only causal LM from transformers, over sequences that
interleave text and speech (InSerter-style pre-training, speech instruction following).

Needs transformers (the ``hf`` extra); the package imports it only when a model or
tokenizer is built.
"""

from speechfm.models.speech_lm.config import (
    SpeechLMConfig,
    llama_lm_config,
    lm_config_dict,
    speech_lm_small,
    speech_lm_tiny,
)
from speechfm.models.speech_lm.factory import (
    build_causal_lm,
    create_speech_lm_model,
    speech_lm_from_pretrained_lm,
)
from speechfm.models.speech_lm.model import IGNORE, FrameStackAdaptor, SpeechLM, SpeechLMInputs
from speechfm.models.speech_lm.prompt import (
    decode_response,
    prompt_segments,
    read_framing,
    text_ids,
)
from speechfm.models.speech_lm.segments import Segment, SpeechSegment, TextSegment
from speechfm.models.speech_lm.tokenizer import (
    load_lm_tokenizer,
    save_lm_tokenizer,
    train_lm_tokenizer,
)

__all__ = [
    "IGNORE",
    "FrameStackAdaptor",
    "Segment",
    "SpeechLM",
    "SpeechLMConfig",
    "SpeechLMInputs",
    "SpeechSegment",
    "TextSegment",
    "build_causal_lm",
    "create_speech_lm_model",
    "decode_response",
    "llama_lm_config",
    "lm_config_dict",
    "load_lm_tokenizer",
    "prompt_segments",
    "save_lm_tokenizer",
    "speech_lm_from_pretrained_lm",
    "speech_lm_small",
    "speech_lm_tiny",
    "read_framing",
    "text_ids",
    "train_lm_tokenizer",
]
