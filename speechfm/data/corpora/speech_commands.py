"""Speech Commands (v0.01 layout): one-second English keywords, split by speaker.

``<root>/<word>/<speaker-hash>_nohash_<n>.wav`` (16 kHz). The transcript is the keyword;
the speaker is the hash prefix. The split is the data set's own convention (its
README's ``which_set``): SHA-1 of the speaker hash -> a percentage -> validation/test/
train, so all clips of a speaker land in one split and the result matches
``validation_list.txt``/``testing_list.txt`` of the full release.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from speechfm.data.corpora.fsdd import Item, prepare_recordings
from speechfm.errors import DataError

_NAME = re.compile(r"^([0-9a-f]+)_nohash_(\d+)\.wav$")
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1


def default_speech_commands_root() -> Path:
    """``../shared/data/speech_commands_mini/speech_commands_v0.01`` beside the repository."""
    return (
        Path(__file__).resolve().parents[3].parent
        / "shared" / "data" / "speech_commands_mini" / "speech_commands_v0.01"
    )


def speaker_split(speaker: str, dev_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """The split (``train``/``dev``/``test``) of a speaker hash, Speech Commands style."""
    h = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    pct = (h % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)
    if pct < dev_percent:
        return "dev"
    if pct < dev_percent + test_percent:
        return "test"
    return "train"


def speech_commands_items(
    root: str | Path | None = None, *, dev_percent: float = 10.0, test_percent: float = 10.0
) -> list[Item]:
    """List keyword clips (``_background_noise_`` and other non-matching files skipped)."""
    root = Path(root) if root is not None else default_speech_commands_root()
    if not root.is_dir():
        raise DataError(f"Speech Commands: {root} is not a directory")
    items = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        word = word_dir.name
        for f in sorted(word_dir.glob("*.wav")):
            m = _NAME.match(f.name)
            if not m:
                continue
            spk, n = m.group(1), int(m.group(2))
            items.append(Item(
                id=f"{spk}_{word}_{n}", path=f, text=word, speaker=spk,
                split=speaker_split(spk, dev_percent, test_percent),
            ))
    if not items:
        raise DataError(f"Speech Commands: no <word>/<hash>_nohash_<n>.wav files under {root}")
    return items


def prepare_speech_commands(
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    dev_percent: float = 10.0,
    test_percent: float = 10.0,
    sampling_rate: int | None = None,
    with_ipa: bool = True,
):
    """Speech Commands as ``{"train"|"dev"|"test": CutSet}``, speaker-disjoint.

    Supervisions: text = keyword, language "en", speaker = hash, ``custom["ipa"]``.
    On the shared 300-clip subset the default split is 205/44/51 clips (30/4/7
    speakers). With ``out_dir`` also writes Kaldi dirs and ``cuts_{split}.jsonl.gz``;
    ``sampling_rate`` resamples files whose rate differs into ``out_dir/wav/``.
    """
    items = speech_commands_items(root, dev_percent=dev_percent, test_percent=test_percent)
    return prepare_recordings(
        items, lang="en", out_dir=out_dir, sampling_rate=sampling_rate, with_ipa=with_ipa,
        corpus="Speech Commands",
    )
