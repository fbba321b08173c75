"""The data a speech LM reads: a sequence is a list of segments, text or speech.

A recipe turns each training example into one sequence (a list of segments) and a batch
into a list of sequences; :meth:`SpeechLM.build_inputs` turns that into the LM's padded
inputs. Interleaved pre-training and instruction data are the same thing with different
segments::

    [TextSegment([bos]), TextSegment(ids_1, train=True), SpeechSegment(feats=f_2),
     TextSegment(ids_3 + [eos], train=True)]                 # interleaved text / speech

    [TextSegment([bos] + prompt_ids), SpeechSegment(encoded=e),  # cached encoder output
     TextSegment(after_ids), TextSegment(answer_ids + [eos], train=True)]

A speech segment becomes ``<speech_begin> frames <speech_end>`` in the LM input: two
learned marker embeddings (not vocabulary tokens, so any plugged-in LM works) around the
adaptor's frames. Only text tokens of ``train=True`` segments carry a loss.

:func:`~speechfm.models.speech_lm.prompt_segments` writes the one prompt framing that
training and :meth:`speechfm.api.SpeechModel.respond` share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Segment", "SpeechSegment", "TextSegment"]


@dataclass
class TextSegment:
    """Token ids of the LM's tokenizer; ``train``: predict them (next-token loss)."""

    ids: Sequence[int] | torch.Tensor
    """(U,) token ids (a list or an int64 tensor; may be empty)."""
    train: bool = False
    """True: these tokens are targets (a response, interleaved text); False: context only
    (a prompt, the begin-of-sequence token)."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class SpeechSegment:
    """One stretch of speech: fbank features, or the encoder's output for them (a recipe
    with a frozen encoder computes that once and caches it)."""

    feats: torch.Tensor | None = None
    """(T, F) fbank features, not normalised (the encoder normalises them)."""
    encoded: torch.Tensor | None = None
    """(T', C) speech-encoder output (what ``SpeechLM.run_encoder`` gives for the
    features), instead of ``feats``."""

    def __post_init__(self) -> None:
        x = self.feats if self.feats is not None else self.encoded
        if x is None or (self.feats is not None and self.encoded is not None):
            raise ValueError("a SpeechSegment holds exactly one of feats or encoded")
        if x.dim() != 2:
            raise ValueError(f"a SpeechSegment's tensor must be 2-D (frames, dims), got "
                             f"shape {tuple(x.shape)}")


Segment = TextSegment | SpeechSegment
"""One segment of a sequence."""
