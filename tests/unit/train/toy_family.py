"""A toy model family defined outside the library, in a few lines: an utterance
classifier that says the first letter of the transcript from mean-pooled encoder frames.

The run-function tests register it with ``speechfm.models.io.register_family`` and take it
through ``speechfm.train.run``, export, ``speechfm.load`` and decoding; the tiny corpus
makes the first letter audible (300 Hz tone for "a", 900 Hz for "b").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from speechfm.decode.ctc import CtcHypothesis
from speechfm.features.fbank import FbankConfig
from speechfm.models.conformer.config import conformer_tiny
from speechfm.models.conformer.speech_encoder import (
    SpeechEncoder,
    SpeechEncoderConfig,
    create_speech_encoder,
)
from speechfm.models.io import ModelFamily

TEXTS = ["ab", "ba", "aab", "bba", "abab", "baba"]


@dataclass(kw_only=True)
class ToyConfig:
    """Utterance classifier: the first token of the transcript from mean-pooled frames."""

    family: ClassVar[str] = "toy"
    encoder: SpeechEncoderConfig = field(default_factory=lambda: SpeechEncoderConfig(
        fbank=FbankConfig(num_mel_bins=20), normalization="utterance", specaugment=False,
        conformer=conformer_tiny()))
    vocab_size: int = 5

    def __post_init__(self):
        self.encoder.conformer.input_dim = self.encoder.fbank.feature_dim

    def validate(self) -> None:
        self.encoder.validate()


class ToyModel(nn.Module):
    def __init__(self, encoder: SpeechEncoder, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, vocab_size)
        self.vocab_size = vocab_size

    def encode(self, feats, x_lens, **kw):
        return self.encoder(feats, x_lens, **kw)

    def _logits(self, feats, x_lens):
        enc, lens = self.encode(feats, x_lens)
        return self.head(enc.sum(1) / lens[:, None])

    def forward(self, batch):
        logits = self._logits(batch["features"], batch["x_lens"])
        first = torch.tensor([t[0] for t in batch["targets"]])
        return nn.functional.cross_entropy(logits, first, reduction="sum"), len(first)

    def recognize(self, feats, x_lens, *, method="greedy", beam=4):
        best = self._logits(feats, x_lens).argmax(-1).tolist()
        return [CtcHypothesis(tokens=[b], token_frames=[0], token_end_frames=[0],
                              token_confidences=[1.0]) for b in best]


def create_toy(config: ToyConfig) -> ToyModel:
    return ToyModel(create_speech_encoder(config.encoder), config.vocab_size)


TOY_FAMILY = ModelFamily("toy", ToyConfig, create_toy)


def make_corpus(root: Path):
    """(cuts manifest, char tokenizer) of the toy corpus under ``root``."""
    import soundfile as sf
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut
    from speechfm.text.char import CharTokenizer

    cuts = []
    for i, text in enumerate(TEXTS):
        t = np.arange(int(16000 * (0.5 + 0.05 * i))) / 16000
        f = 300 if text[0] == "a" else 900  # the first letter is audible
        sf.write(root / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
        rec = Recording.from_file(root / f"u{i}.wav", recording_id=f"u{i}")
        cuts.append(make_cut(f"u{i}", rec, text=text, language="xx", speaker=f"s{i}"))
    CutSet.from_cuts(cuts).to_file(root / "cuts.jsonl.gz")
    return root / "cuts.jsonl.gz", CharTokenizer.train(TEXTS)
