"""Manifests are lhotse CutSets; this module gets one from whatever the user has.

:func:`load_manifest` accepts, and tells apart by looking at them:

* a Kaldi data directory (has ``wav.scp``; see :mod:`speechfm.data.kaldi`),
* a lhotse manifest (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.json.gz``) of cuts or
  recordings,
* a ``.tsv`` with a header, or a ``.jsonl`` whose records have a ``path`` key (see
  :mod:`speechfm.data.tabular`).

``load_manifest`` is strict (any bad entry raises a :class:`~speechfm.errors.DataError`
listing them); :func:`read_manifest` is the lenient form behind ``speechfm data check``,
returning the cuts together with the problems found while importing.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from speechfm.data.audio import DEFAULT_MAX_DURATION
from speechfm.errors import DataError

if TYPE_CHECKING:
    from lhotse import CutSet, Recording
    from lhotse.cut import Cut

    from speechfm.data.check import ItemProblem

ManifestFormat = Literal["kaldi", "lhotse", "tsv", "jsonl"]

_LHOTSE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut", "PaddingCut")


def make_cut(
    utt_id: str,
    recording: Recording,
    *,
    start: float = 0.0,
    duration: float | None = None,
    text: str | None = None,
    language: str | None = None,
    speaker: str | None = None,
    gender: str | None = None,
    ipa: str | None = None,
) -> Cut:
    """One speechfm cut: a span of ``recording`` (all its channels) with one supervision.

    The supervision follows the data conventions: ``text`` orthographic, ``language``
    an ISO 639 code, ``speaker`` the speaker/voice id, ``custom["ipa"]`` the IPA
    transcript. ``duration`` defaults to the rest of the recording after ``start``.
    """
    from lhotse import SupervisionSegment
    from lhotse.cut import MonoCut, MultiCut

    if duration is None:
        duration = recording.duration - start
    channel = (
        recording.channel_ids[0] if recording.num_channels == 1 else list(recording.channel_ids)
    )
    sup = SupervisionSegment(
        id=utt_id,
        recording_id=recording.id,
        start=0.0,  # supervision times are relative to the cut
        duration=duration,
        channel=channel,
        text=text,
        language=language or None,
        speaker=speaker or None,
        gender=gender or None,
        custom={"ipa": ipa} if ipa is not None else None,
    )
    cls = MonoCut if recording.num_channels == 1 else MultiCut
    return cls(
        id=utt_id,
        start=start,
        duration=duration,
        channel=channel,
        recording=recording,
        supervisions=[sup],
    )


def _first_record(path: Path) -> dict | None:
    """The first JSON object of a .json/.jsonl(.gz) file, or None if it has none."""
    opener = gzip.open if path.name.endswith(".gz") else open
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if name.endswith(".jsonl"):
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        return rec if isinstance(rec, dict) else None
                return None
            data = json.load(f)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})") from e
    if isinstance(data, list):
        return data[0] if data and isinstance(data[0], dict) else None
    return None


def detect_format(src: str | Path) -> ManifestFormat:
    """Which kind of manifest ``src`` is; a :class:`DataError` says why if none."""
    p = Path(src)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir():
        if (p / "wav.scp").is_file():
            return "kaldi"
        raise DataError(f"{p}: a directory but not a Kaldi data dir (it has no wav.scp)")
    name = p.name.lower()
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(_LHOTSE_SUFFIXES):
        first = _first_record(p)
        if first is None:
            raise DataError(f"{p}: holds no manifest records")
        if "path" in first and name.endswith((".jsonl", ".jsonl.gz")):
            return "jsonl"
        if first.get("type") in _CUT_TYPES or "recording" in first or "sources" in first:
            return "lhotse"
        if "recording_id" in first:
            raise DataError(
                f"{p}: a lhotse supervision manifest has no audio; give cuts or recordings"
            )
        raise DataError(
            f"{p}: records are neither lhotse cuts/recordings nor speechfm rows with a 'path' key "
            f"(first record has keys {sorted(first)})"
        )
    raise DataError(
        f"{p}: cannot tell its format: expected a Kaldi data dir (with wav.scp), a lhotse "
        "manifest (.jsonl, .jsonl.gz, .json), a .tsv with a header, or a .jsonl with 'path' keys"
    )


def _read_lhotse(p: Path) -> CutSet:
    from lhotse import CutSet, RecordingSet
    from lhotse import load_manifest as lhotse_load

    try:
        m = lhotse_load(p)
    except Exception as e:  # lhotse raises ValueError/KeyError/... for foreign files
        raise DataError(f"{p}: not a readable lhotse manifest ({e})") from e
    if isinstance(m, RecordingSet):
        # One cut per recording under the recording's own id, without transcripts
        # (lhotse's from_manifests would append "-0" to every id).
        return CutSet.from_cuts(r.to_cut() for r in m)
    if not isinstance(m, CutSet):
        raise DataError(f"{p}: a lhotse {type(m).__name__} has no audio; give cuts or recordings")
    return m


def read_manifest(
    src: str | Path,
    *,
    num_jobs: int = 4,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> tuple[CutSet, list[ItemProblem]]:
    """Load any supported manifest leniently: ``(cuts, problems found while importing)``.

    Nothing is dropped: items whose audio cannot be probed stay in ``cuts`` (with a
    problem), entries that cannot become cuts appear only in ``problems``.
    """
    fmt = detect_format(src)
    p = Path(src)
    if fmt == "kaldi":
        from speechfm.data.kaldi import read_kaldi_dir

        return read_kaldi_dir(p, num_jobs=num_jobs, max_duration=max_duration)
    if fmt == "tsv":
        from speechfm.data.tabular import read_tsv

        return read_tsv(p, num_jobs=num_jobs, max_duration=max_duration)
    if fmt == "jsonl":
        from speechfm.data.tabular import read_jsonl

        return read_jsonl(p, num_jobs=num_jobs, max_duration=max_duration)
    return _read_lhotse(p), []


def load_manifest(
    src: str | Path,
    *,
    num_jobs: int = 4,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> CutSet:
    """Any supported manifest as a CutSet; raises if any entry is unusable.

    Kaldi dirs, TSV and path-JSONL have every audio header read (missing, undecodable,
    empty or too-long files raise); lhotse manifests are trusted for their audio and only
    checked for repeated ids. ``speechfm data check`` decodes everything.

    Raises:
        DataError: the format is unknown, or entries are bad (listed by id).
    """
    from speechfm.data.check import find_duplicate_ids, raise_if_problems

    cuts, problems = read_manifest(src, num_jobs=num_jobs, max_duration=max_duration)
    raise_if_problems(problems + find_duplicate_ids(cuts), str(src))
    return cuts
