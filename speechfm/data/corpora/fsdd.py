"""Free Spoken Digit Dataset (FSDD): real English digits, split by speaker.

``<root>/recordings/{digit}_{speaker}_{take}.wav`` (8 kHz mono; 6 speakers x 10 digits
x 50 takes). Transcripts are the digit as a word ("zero".."nine"). Whole speakers are
held out for dev and test, so scores measure unseen voices.

``prepare_fsdd_classification`` gives the classification view: task "digit" (label =
digit word, speakers held out) or task "speaker" (label = speaker name, takes held out).

Also home of ``prepare_recordings``, the shared tail of the real-recording corpora:
optional resampling (soxr), IPA of the transcripts, Kaldi dirs and manifests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from speechfm.errors import AudioError, DataError

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_SPEAKERS: tuple[str, ...] = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
_log = logging.getLogger(__name__)


def default_fsdd_root() -> Path:
    """``../shared/data/fsdd`` beside the repository checkout."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fsdd"


@dataclass(frozen=True)
class Item:
    """One utterance of a real-recording corpus before manifests are written."""

    id: str
    """Utterance id, prefixed by the speaker id."""
    path: Path
    """Audio file."""
    text: str
    """Orthographic transcript."""
    speaker: str
    """Speaker id."""
    split: str
    """train, dev or test."""
    extra: tuple[tuple[str, str | int], ...] = ()
    """Extra ``supervision.custom`` fields as ``(key, value)`` pairs (hashable)."""


def prepare_recordings(
    items: Sequence[Item],
    *,
    lang: str,
    out_dir: str | Path | None,
    sampling_rate: int | None,
    with_ipa: bool,
    corpus: str,
):
    """Turn items into ``{"train"|"dev"|"test": CutSet}``; write them when ``out_dir`` is set.

    With ``sampling_rate`` set and different from a file's rate, the file is resampled
    with soxr into ``out_dir/wav/`` (lhotse's own resampling needs scipy or torchaudio,
    neither of which speechfm requires); this needs ``out_dir``. ``with_ipa`` adds
    ``custom["ipa"]`` via ``speechfm.text.ipa.phonemize`` (skipped with a warning when
    espeak-ng/phonemizer is missing).
    """
    import soundfile as sf
    from lhotse import CutSet

    from speechfm.data.corpora.mini_cv_lang import cut_dict, write_cuts_jsonl_gz, write_kaldi_dir

    out = Path(out_dir).resolve() if out_dir is not None else None
    ipa: dict[str, str] = {}
    if with_ipa:
        texts = sorted({it.text for it in items})
        from speechfm.text.espeak import EspeakNotFound

        try:
            from speechfm.text.ipa import phonemize

            ipa = dict(zip(texts, phonemize(texts, lang), strict=True))
        except (ImportError, EspeakNotFound) as e:
            _log.warning("%s: no IPA transcripts (%s)", corpus, e)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for it in items:
        try:
            info = sf.info(str(it.path))
        except Exception as e:
            raise AudioError(f"{corpus}: cannot read {it.path}: {e}") from e
        if info.frames == 0:
            raise AudioError(f"{corpus}: {it.path} is empty")
        path, sr, n = it.path.resolve(), int(info.samplerate), int(info.frames)
        if sampling_rate and sr != sampling_rate:
            if out is None:
                raise DataError(f"{corpus}: resampling {it.path} from {sr} to {sampling_rate} Hz needs out_dir")
            path, n = _resample_copy(it.path, out / "wav" / f"{it.id}.wav", sampling_rate)
            sr = sampling_rate
        rows[it.split].append({
            "id": it.id, "path": str(path), "text": it.text, "speaker": it.speaker, "lang": lang,
            "ipa": ipa.get(it.text, ""), "num_samples": n, "sampling_rate": sr,
            "duration": round(n / sr, 6), "extra": dict(it.extra),
        })
    result = {}
    for split in SPLITS:
        rs = sorted(rows[split], key=lambda r: r["id"])
        dicts = [cut_dict(r, extra=r["extra"]) for r in rs]
        if out is not None:
            write_kaldi_dir(out / split, rs)
            write_cuts_jsonl_gz(dicts, out / f"cuts_{split}.jsonl.gz")
        result[split] = CutSet.from_dicts(dicts)
    return result


def _resample_copy(src: Path, dst: Path, sampling_rate: int) -> tuple[Path, int]:
    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(src), dtype="float32", always_2d=True)
    y = soxr.resample(audio[:, 0], sr, sampling_rate, quality="HQ")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), y, sampling_rate, subtype="PCM_16")
    return dst.resolve(), int(y.shape[0])


def fsdd_items(
    root: str | Path | None = None,
    *,
    dev_speakers: Sequence[str] = ("nicolas",),
    test_speakers: Sequence[str] = ("theo", "yweweler"),
) -> list[Item]:
    """List FSDD recordings with their speaker-disjoint split (others are train)."""
    root = Path(root) if root is not None else default_fsdd_root()
    rec_dir = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(rec_dir.glob("*.wav"))
    if not files:
        raise DataError(f"FSDD: no .wav files in {rec_dir}")
    overlap = set(dev_speakers) & set(test_speakers)
    if overlap:
        raise DataError(f"FSDD: speakers {sorted(overlap)} are in both dev and test")
    items, speakers = [], set()
    for f in files:
        m = _FSDD_NAME.match(f.name)
        if not m:
            raise DataError(f"FSDD: {f} is not named {{digit}}_{{speaker}}_{{take}}.wav")
        digit, spk, take = int(m.group(1)), m.group(2), int(m.group(3))
        speakers.add(spk)
        split = "test" if spk in test_speakers else "dev" if spk in dev_speakers else "train"
        items.append(Item(id=f"{spk}_{digit}_{take:02d}", path=f, text=DIGIT_WORDS[digit], speaker=spk, split=split))
    missing = (set(dev_speakers) | set(test_speakers)) - speakers
    if missing:
        raise DataError(f"FSDD: held-out speakers {sorted(missing)} not found in {rec_dir} (found {sorted(speakers)})")
    return items


def prepare_fsdd(
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    dev_speakers: Sequence[str] = ("nicolas",),
    test_speakers: Sequence[str] = ("theo", "yweweler"),
    sampling_rate: int | None = None,
    with_ipa: bool = True,
):
    """FSDD as ``{"train"|"dev"|"test": CutSet}`` with whole speakers held out.

    Default split: train george/jackson/lucas, dev nicolas, test theo/yweweler
    (1500/500/1000 utterances). Supervisions: text "zero".."nine", language "en",
    speaker name, ``custom["ipa"]``. With ``out_dir`` also writes Kaldi dirs
    ``out_dir/{split}/`` and ``out_dir/cuts_{split}.jsonl.gz``; ``sampling_rate=16000``
    resamples the 8 kHz files into ``out_dir/wav/`` (None keeps them as they are).
    """
    items = fsdd_items(root, dev_speakers=dev_speakers, test_speakers=test_speakers)
    return prepare_recordings(
        items, lang="en", out_dir=out_dir, sampling_rate=sampling_rate, with_ipa=with_ipa, corpus="FSDD"
    )


FSDD_TASKS: tuple[str, ...] = ("digit", "speaker")


def fsdd_classification_items(
    root: str | Path | None = None,
    *,
    task: str = "digit",
    dev_speakers: Sequence[str] = ("nicolas",),
    test_speakers: Sequence[str] = ("theo", "yweweler"),
    dev_takes: Iterable[int] = range(40, 45),
    test_takes: Iterable[int] = range(45, 50),
) -> list[Item]:
    """FSDD items labelled for classification (``text`` = the class label).

    ``task="digit"``: label "zero".."nine", split by speaker (``dev_speakers`` /
    ``test_speakers`` held out, the takes arguments unused). ``task="speaker"``: label =
    speaker name, split by take number (``dev_takes`` / ``test_takes`` held out, the rest
    train), so every speaker is in every split; the speaker arguments are unused.
    ``custom`` carries ``word`` (the digit word) and ``take``.
    """
    if task not in FSDD_TASKS:
        raise DataError(f"FSDD: task must be one of {list(FSDD_TASKS)}, got {task!r}")
    if task == "digit":
        items = fsdd_items(root, dev_speakers=dev_speakers, test_speakers=test_speakers)
    else:
        items = fsdd_items(root, dev_speakers=(), test_speakers=())
        dev_t, test_t = frozenset(int(t) for t in dev_takes), frozenset(int(t) for t in test_takes)
        overlap = dev_t & test_t
        if overlap:
            raise DataError(f"FSDD: takes {sorted(overlap)} are in both dev and test")
    out = []
    for it in items:
        m = _FSDD_NAME.match(it.path.name)
        assert m is not None  # fsdd_items checked the name
        take = int(m.group(3))
        extra = (("word", it.text), ("take", take))
        if task == "digit":
            out.append(replace(it, extra=extra))
        else:
            split = "test" if take in test_t else "dev" if take in dev_t else "train"
            out.append(replace(it, text=it.speaker, split=split, extra=extra))
    if task == "speaker":
        speakers = {it.speaker for it in out}
        for split in SPLITS:
            missing = speakers - {it.speaker for it in out if it.split == split}
            if missing:
                raise DataError(
                    f"FSDD speaker task: split {split!r} has no takes of speakers {sorted(missing)} "
                    f"(dev takes {sorted(dev_t)}, test takes {sorted(test_t)})"
                )
    return out


def prepare_fsdd_classification(
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    task: str = "digit",
    dev_speakers: Sequence[str] = ("nicolas",),
    test_speakers: Sequence[str] = ("theo", "yweweler"),
    dev_takes: Iterable[int] = range(40, 45),
    test_takes: Iterable[int] = range(45, 50),
    sampling_rate: int | None = 16000,
):
    """FSDD for classification as ``{"train"|"dev"|"test": CutSet}``; text = the label.

    ``task="digit"``: digit words, speaker-disjoint (default train george/jackson/lucas
    1500, dev nicolas 500, test theo/yweweler 1000 clips). ``task="speaker"``: speaker
    names, all six speakers in every split, takes 0-39 train / 40-44 dev / 45-49 test
    (2400/300/300 clips). Supervisions: language "en", speaker name, ``custom`` ``word``
    and ``take``; no IPA. ``sampling_rate=16000`` resamples the 8 kHz files into
    ``out_dir/wav/`` as ``prepare_fsdd`` does (so it needs ``out_dir``; pass None to keep
    8 kHz). With ``out_dir`` also writes Kaldi dirs and ``cuts_{split}.jsonl.gz``.
    """
    items = fsdd_classification_items(
        root, task=task, dev_speakers=dev_speakers, test_speakers=test_speakers,
        dev_takes=dev_takes, test_takes=test_takes,
    )
    return prepare_recordings(
        items, lang="en", out_dir=out_dir, sampling_rate=sampling_rate, with_ipa=False,
        corpus=f"FSDD ({task} classification)",
    )
