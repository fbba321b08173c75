"""Speech Commands (v0.01 layout): one-second English keywords, split by speaker.

``<root>/<word>/<speaker-hash>_nohash_<n>.wav`` (16 kHz). The transcript is the keyword;
the speaker is the hash prefix. The split is the data set's own convention (its
README's ``which_set``): SHA-1 of the speaker hash -> a percentage -> validation/test/
train, so all clips of a speaker land in one split and the result matches
``validation_list.txt``/``testing_list.txt`` of the full release.

``prepare_speech_commands12`` reads the twelve-class v0.02 test clips
(``speech_commands_v2_test12/labels.tsv``: path, label, speaker, word; 16 kHz FLAC) for
keyword classification: text = the label (ten words, ``_unknown_``, ``_silence_``).
Those clips were themselves chosen by the hash above (they are all "test" speakers,
whose hash falls between 10 and 20 %), so splitting them again with the unsalted hash
would put nearly every speaker into one split; the split hashes
``SC12_SPLIT_SALT + speaker`` instead, still whole speakers per split.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from pathlib import Path

from speechfm.data.corpora.fsdd import Item, prepare_recordings
from speechfm.errors import DataError

_NAME = re.compile(r"^([0-9a-f]+)_nohash_(\d+)\.wav$")
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
_log = logging.getLogger(__name__)

SC12_LABELS: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_",
)
"""The twelve classes of the canonical Speech Commands keyword-spotting task."""
SC12_SPLIT_SALT = "speech_commands12/"
"""Prefix of the speaker id before hashing it into a split (see the module docstring)."""
_SC12_COLUMNS = ("path", "label", "speaker", "word")


def default_speech_commands_root() -> Path:
    """``../shared/data/speech_commands_mini/speech_commands_v0.01`` beside the repository."""
    return (
        Path(__file__).resolve().parents[3].parent
        / "shared" / "data" / "speech_commands_mini" / "speech_commands_v0.01"
    )


def default_speech_commands12_root() -> Path:
    """``../shared/data/speech_commands_v2_test12`` beside the repository."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech_commands_v2_test12"


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


def speech_commands12_items(
    root: str | Path | None = None, *, dev_percent: float = 10.0, test_percent: float = 20.0
) -> list[Item]:
    """List the clips of ``<root>/labels.tsv`` with their speaker-disjoint split.

    Item id: ``<speaker>_<file stem>`` (unique, stable, speaker-prefixed for Kaldi);
    text = label; ``extra`` ``word`` = the spoken word (for ``_unknown_`` clips the real
    word, e.g. ``marvin``). Raises DataError for a missing ``labels.tsv``, a malformed
    row, a label outside ``SC12_LABELS``, a listed file that does not exist, or
    repeated ids -- each naming the line or file.
    """
    root = Path(root) if root is not None else default_speech_commands12_root()
    tsv = root / "labels.tsv"
    if not tsv.is_file():
        raise DataError(f"Speech Commands 12: {tsv} is missing (expected columns {', '.join(_SC12_COLUMNS)})")
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:4]) != _SC12_COLUMNS:
            raise DataError(
                f"Speech Commands 12: {tsv} must start with the tab-separated header "
                f"{' '.join(_SC12_COLUMNS)}, got {header}"
            )
        items: list[Item] = []
        seen: dict[str, int] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 4 or not all(x.strip() for x in row[:4]):
                raise DataError(f"Speech Commands 12: {tsv} line {lineno}: expected 4 non-empty columns, got {row}")
            rel, label, spk, word = (x.strip() for x in row[:4])
            if label not in SC12_LABELS:
                raise DataError(f"Speech Commands 12: {tsv} line {lineno}: label {label!r} is not one of {list(SC12_LABELS)}")
            if any(c.isspace() for c in spk):
                raise DataError(f"Speech Commands 12: {tsv} line {lineno}: speaker {spk!r} contains whitespace")
            path = root / rel
            if not path.is_file():
                raise DataError(f"Speech Commands 12: {path} (listed in {tsv} line {lineno}) does not exist")
            uid = f"{spk}_{path.stem}"
            if any(c.isspace() for c in uid):
                raise DataError(f"Speech Commands 12: {tsv} line {lineno}: file name {path.name!r} contains whitespace")
            if uid in seen:
                raise DataError(f"Speech Commands 12: {tsv} lines {seen[uid]} and {lineno} give the same id {uid!r}")
            seen[uid] = lineno
            items.append(Item(
                id=uid, path=path, text=label, speaker=spk,
                split=speaker_split(SC12_SPLIT_SALT + spk, dev_percent, test_percent),
                extra=(("word", word),),
            ))
    if not items:
        raise DataError(f"Speech Commands 12: {tsv} lists no clips")
    return items


def prepare_speech_commands12(
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    dev_percent: float = 10.0,
    test_percent: float = 20.0,
    sampling_rate: int | None = None,
):
    """Twelve-class Speech Commands as ``{"train"|"dev"|"test": CutSet}``, speaker-disjoint.

    Supervisions: text = label exactly as in ``labels.tsv`` (``yes``..``go``,
    ``_unknown_``, ``_silence_``), speaker = its ``speaker`` column, language "en",
    ``custom["word"]``. On the shared 2,744 clips the defaults (10 % dev, 20 % test of
    speakers) give 1854/259/631 clips (265/39/72 speakers), every label in every split
    (test: 36..60 clips per label). Each ``_silence_`` clip is its own speaker. With
    ``out_dir`` also writes Kaldi dirs and ``cuts_{split}.jsonl.gz``; ``sampling_rate``
    resamples files whose rate differs into ``out_dir/wav/``. Unreadable or empty audio
    raises AudioError (a DataError) naming the file.
    """
    from speechfm.data.subsets import split_summary

    items = speech_commands12_items(root, dev_percent=dev_percent, test_percent=test_percent)
    cuts = prepare_recordings(
        items, lang="en", out_dir=out_dir, sampling_rate=sampling_rate, with_ipa=False,
        corpus="Speech Commands 12",
    )
    for split, stats in split_summary(cuts).items():
        _log.info("Speech Commands 12 %s: %s", split, stats)
    return cuts
