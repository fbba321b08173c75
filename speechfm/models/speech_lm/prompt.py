"""The one prompt framing that speech-LM training and ``SpeechModel.respond`` share.

A prompt is::

    <s> prompt_before [<speech_begin> speech frames <speech_end> | text] prompt_after

and a training example appends ``response </s>`` with the loss on it. ``<s>`` / ``</s>``
are the tokenizer's bos / eos tokens (no bos token: nothing); the speech markers are the
model's learned embeddings. Each string is tokenised on its own
(``add_special_tokens=False``), so the speech and the text condition of an instruction
give exactly the same prompt tokens around the speech or the text. Instruction framing
(``"User: "``, ``"\\nAssistant:"``, a task description) goes into
``prompt_before`` / ``prompt_after``; spaces are kept as given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from speechfm.models.speech_lm.segments import Segment, SpeechSegment, TextSegment

__all__ = ["FRAMING_FILE", "decode_response", "prompt_segments", "read_framing", "text_ids"]

FRAMING_FILE = "inserter.json"
"""The file of a speech LM model directory (written by recipes/inserter) whose
``"framing"`` holds the prompts it was trained with."""


def read_framing(model_dir: str | os.PathLike) -> dict[str, str]:
    """The prompt framing (``{"prompt_before", "prompt_after", ...}``) a speech LM in
    ``model_dir`` was trained with, from its :data:`FRAMING_FILE`; ``{}`` without one.

    Raises:
        SpeechfmError: the file is there but not a JSON object with a framing object.
    """
    from speechfm.errors import SpeechfmError

    file = Path(model_dir) / FRAMING_FILE
    if not file.is_file():
        return {}
    try:
        return dict(json.loads(file.read_text(encoding="utf-8")).get("framing") or {})
    except (ValueError, AttributeError, TypeError) as e:
        raise SpeechfmError(f"{file}: not a valid {FRAMING_FILE} ({e})") from e


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def prompt_segments(
    tokenizer: Any,
    *,
    speech: SpeechSegment | torch.Tensor | None = None,
    text: str | None = None,
    prompt_before: str = "",
    prompt_after: str = "",
    response: str | None = None,
) -> list[Segment]:
    """One sequence in the framing of the module doc.

    Args:
        tokenizer: the LM's transformers tokenizer.
        speech: the speech (a :class:`SpeechSegment`, or a (T, F) fbank tensor).
        text: a text input in place of the speech (the text condition).
        prompt_before, prompt_after: text around the speech or text input.
        response: the target (training): its tokens and eos carry the loss; None for a
            generation prefix.

    Returns:
        The segments (prompt parts without loss, then the response).
    """
    if speech is not None and text is not None:
        raise ValueError("give speech or text, not both")
    bos = tokenizer.bos_token_id
    segments: list[Segment] = [TextSegment(([bos] if bos is not None else [])
                                           + text_ids(tokenizer, prompt_before))]
    if speech is not None:
        segments.append(speech if isinstance(speech, SpeechSegment)
                        else SpeechSegment(feats=speech))
    if text is not None:
        segments.append(TextSegment(text_ids(tokenizer, text)))
    segments.append(TextSegment(text_ids(tokenizer, prompt_after)))
    if response is not None:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token to end a response with")
        segments.append(TextSegment(text_ids(tokenizer, response) + [eos], train=True))
    return segments


def decode_response(tokenizer: Any, ids: list[int]) -> str:
    """Generated ids -> text (special tokens dropped, outer whitespace stripped)."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
