"""Kaldi data directories <-> lhotse CutSets.

A speechfm Kaldi data dir holds ``wav.scp`` (``uttid path``, or ``recid path`` together
with ``segments``: ``uttid recid start end``), ``text``, ``utt2spk``, ``spk2utt``,
``utt2lang``, ``utt2dur`` and optionally ``spk2gender`` and the speechfm extension
``text_ipa`` (``uttid IPA transcript``, stored as ``supervision.custom["ipa"]``).
Each utterance becomes one cut with one supervision.

Why not ``lhotse.kaldi.load_kaldi_data_dir`` / ``export_to_kaldi`` directly: the importer
drops recordings it cannot read with only a log line (speechfm must report them), needs
one sampling rate for the whole directory (FSDD is 8 kHz next to 16 kHz corpora), keeps
the last of repeated keys silently, and ignores ``text_ipa``; the exporter writes ffmpeg
pipes instead of paths for non-wav files, always writes ``segments`` and neither
``spk2utt`` nor ``text_ipa``. This module keeps lhotse's data model (recordings probed by
``lhotse.Recording.from_file``, lhotse cuts and supervisions) and its ``add_durations``
arithmetic, and adds what those functions lack.

Relative paths in ``wav.scp`` are resolved against the current directory (Kaldi's
convention), then the data dir, then its parent; imported manifests hold absolute paths.
``cmd |`` entries are kept as lhotse ``command`` sources.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speechfm.data.audio import (
    DEFAULT_MAX_DURATION,
    BadAudioError,
    probe_recording,
    unprobed_recording,
)
from speechfm.data.check import (
    BAD_ENTRY,
    DUPLICATE_ID,
    DURATION_MISMATCH,
    ItemProblem,
    raise_if_problems,
)
from speechfm.data.manifest import make_cut
from speechfm.errors import DataError

if TYPE_CHECKING:
    from lhotse import CutSet, Recording
    from lhotse.cut import Cut

UTT2DUR_TOLERANCE = 0.05
"""Seconds an ``utt2dur`` entry may differ from the audio before it is reported."""

SEGMENT_END_TOLERANCE = 0.02
"""Seconds a segment may run past its recording's end (clamped) before it is reported."""

_AUX_FILES = ("text", "utt2spk", "utt2lang", "utt2dur", "text_ipa")


@dataclass(frozen=True)
class _Entry:
    key: str
    value: str
    line: int


def _read_table(path: Path) -> list[_Entry] | None:
    """``key value`` lines of a Kaldi file (value may be empty or contain spaces)."""
    if not path.is_file():
        return None
    out = []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            parts = raw.strip().split(maxsplit=1)
            if not parts:
                continue
            out.append(_Entry(parts[0], parts[1].strip() if len(parts) > 1 else "", n))
    return out


def _first_values(
    entries: list[_Entry] | None, fname: str, problems: list[ItemProblem]
) -> dict[str, _Entry]:
    """Key -> first entry; each repeated key is reported as a duplicate."""
    if entries is None:
        return {}
    seen: dict[str, _Entry] = {}
    repeats: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        if e.key in seen:
            repeats[e.key].append(e.line)
        else:
            seen[e.key] = e
    for key, lines in repeats.items():
        all_lines = [seen[key].line, *lines]
        problems.append(
            ItemProblem(
                key, DUPLICATE_ID, f"listed {len(all_lines)} times in {fname} (lines {all_lines})"
            )
        )
    return seen


def _resolve(source: str, data_dir: Path) -> str:
    if source.endswith("|"):
        return source
    p = Path(source)
    if p.is_absolute():
        return str(p)
    for base in (Path.cwd(), data_dir, data_dir.parent):
        if (base / p).exists():
            return str((base / p).resolve())
    return str((Path.cwd() / p).absolute())


def _parse_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def read_kaldi_dir(
    path: str | Path,
    *,
    num_jobs: int = 4,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> tuple[CutSet, list[ItemProblem]]:
    """Import a Kaldi data dir leniently: every utterance is kept, every problem listed.

    Utterances whose audio cannot be probed keep a stand-in recording (see
    :func:`~speechfm.data.audio.unprobed_recording`) and get a problem; entries that
    cannot become cuts (a transcript without audio, a malformed line) are problems
    only. Repeated utterance ids in ``wav.scp``/``segments`` become repeated cuts,
    which :func:`~speechfm.data.check.check_cuts` reports.

    Args:
        path: the data directory.
        num_jobs: threads reading audio headers.
        max_duration: files longer than this (seconds) are reported as too long;
            not applied to recordings split by ``segments``.

    Returns:
        ``(cuts, problems)``; problems carry ``index=None`` and the utterance id.
    """
    from lhotse import CutSet
    from lhotse.utils import add_durations

    d = Path(path)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory")
    wav_entries = _read_table(d / "wav.scp")
    if wav_entries is None:
        raise DataError(f"{d}: not a Kaldi data dir (no wav.scp)")
    problems: list[ItemProblem] = []
    seg_entries = _read_table(d / "segments")
    aux = {name: _first_values(_read_table(d / name), name, problems) for name in _AUX_FILES}
    genders = {
        k: e.value
        for k, e in _first_values(_read_table(d / "spk2gender"), "spk2gender", []).items()
    }

    # (utt id, recording id, start, end or None for "to the end") per utterance.
    utts: list[tuple[str, str, float, float | None]] = []
    if seg_entries is None:
        sources: dict[str, str] = {}
        for e in wav_entries:
            if not e.value:
                problems.append(ItemProblem(e.key, BAD_ENTRY, f"wav.scp line {e.line} has no path"))
                continue
            # Repeated ids stay repeated cuts; the first source is probed for all of them.
            sources.setdefault(e.key, _resolve(e.value, d))
            utts.append((e.key, e.key, 0.0, None))
    else:
        rec_seen = _first_values(wav_entries, "wav.scp", [])
        sources = {k: _resolve(e.value, d) for k, e in rec_seen.items() if e.value}
        rec_counts = Counter(e.key for e in wav_entries)
        for e in seg_entries:
            fields = e.value.split()
            start = _parse_float(fields[1]) if len(fields) == 3 else None
            end = _parse_float(fields[2]) if len(fields) == 3 else None
            if start is None or end is None:
                problems.append(
                    ItemProblem(
                        e.key, BAD_ENTRY, f"segments line {e.line} is not 'uttid recid start end'"
                    )
                )
                continue
            rec_id = fields[0]
            if rec_id not in sources:
                problems.append(
                    ItemProblem(
                        e.key,
                        BAD_ENTRY,
                        f"segments line {e.line}: recording {rec_id} has no path in wav.scp",
                    )
                )
                continue
            if rec_counts[rec_id] > 1:
                problems.append(
                    ItemProblem(
                        e.key,
                        BAD_ENTRY,
                        f"its recording {rec_id} is listed more than once in wav.scp",
                    )
                )
            if start < 0 or (end != -1 and end <= start):
                problems.append(
                    ItemProblem(
                        e.key, BAD_ENTRY, f"segments line {e.line}: bad time range {start} to {end}"
                    )
                )
                continue
            utts.append((e.key, rec_id, start, None if end == -1 else end))

    # Everything the transcript files mention must have audio.
    utt_ids = {u for u, *_ in utts} | {p.id for p in problems if p.reason == BAD_ENTRY}
    orphans: dict[str, list[str]] = defaultdict(list)
    for name, table in aux.items():
        for key in table:
            if key not in utt_ids:
                orphans[key].append(name)
    for key, names in orphans.items():
        where = "segments" if seg_entries is not None else "wav.scp"
        problems.append(
            ItemProblem(key, BAD_ENTRY, f"listed in {', '.join(names)} but has no entry in {where}")
        )

    # Read each needed recording's header once. A segmented recording may be long (a
    # meeting, an audiobook chapter): only its segments' lengths matter.
    rec_limit = None if seg_entries is not None else max_duration
    needed = list(dict.fromkeys(r for _, r, _, _ in utts))

    def probe(rec_id: str) -> Recording | BadAudioError:
        try:
            return probe_recording(sources[rec_id], rec_id, max_duration=rec_limit)
        except BadAudioError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as ex:
        probed = dict(zip(needed, ex.map(probe, needed), strict=True))

    cuts: list[Cut] = []
    for utt, rec_id, start, end in utts:
        rec = probed[rec_id]
        claimed = _parse_float(aux["utt2dur"][utt].value) if utt in aux["utt2dur"] else None
        if isinstance(rec, BadAudioError):
            detail = str(rec) if rec_id == utt else f"utterance {utt}: {rec}"
            problems.append(ItemProblem(utt, rec.reason, detail))
            # Keep the item under the manifest's own claim of its length.
            duration = max(0.0, end - start) if end is not None else (claimed or 0.0)
            rec = unprobed_recording(sources[rec_id], rec_id, duration=start + duration)
        else:
            rec_end = rec.duration if end is None else end
            if rec_end > rec.duration + SEGMENT_END_TOLERANCE:
                problems.append(
                    ItemProblem(
                        utt,
                        BAD_ENTRY,
                        f"segment ends at {rec_end} s, after the end of recording {rec_id} ({rec.duration:.3f} s)",
                    )
                )
            if start >= rec.duration:
                # Nothing of the recording is left to make a cut from.
                problems.append(
                    ItemProblem(
                        utt,
                        BAD_ENTRY,
                        f"segment starts at {start} s, after the end of recording {rec_id}",
                    )
                )
                continue
            duration = add_durations(
                min(rec_end, rec.duration), -start, sampling_rate=rec.sampling_rate
            )
            if claimed is not None and abs(claimed - duration) > UTT2DUR_TOLERANCE:
                problems.append(
                    ItemProblem(
                        utt,
                        DURATION_MISMATCH,
                        f"utt2dur says {claimed} s but the audio gives {duration:.3f} s",
                    )
                )
        speaker = aux["utt2spk"][utt].value if utt in aux["utt2spk"] else None
        cuts.append(
            make_cut(
                utt,
                rec,
                start=start,
                duration=duration,
                text=aux["text"][utt].value if utt in aux["text"] else None,
                language=aux["utt2lang"][utt].value if utt in aux["utt2lang"] else None,
                speaker=speaker,
                gender=genders.get(speaker) if speaker else None,
                ipa=aux["text_ipa"][utt].value if utt in aux["text_ipa"] else None,
            )
        )
    return CutSet.from_cuts(cuts), problems


def load_kaldi_dir(
    path: str | Path, *, num_jobs: int = 4, max_duration: float | None = DEFAULT_MAX_DURATION
) -> CutSet:
    """Import a Kaldi data dir as a CutSet, refusing it if anything is wrong.

    Raises:
        DataError: listing the bad utterances and why (run ``speechfm data check`` for
            the full report and a cleaned copy).
    """
    from speechfm.data.check import find_duplicate_ids

    cuts, problems = read_kaldi_dir(path, num_jobs=num_jobs, max_duration=max_duration)
    raise_if_problems(problems + find_duplicate_ids(cuts), str(path))
    return cuts


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fmt_time(x: float) -> str:
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def _check_id(kind: str, value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise DataError(
            f"{kind} {value!r} cannot be written to a Kaldi dir: ids must be non-empty without whitespace"
        )
    return value


def _wav_scp_value(cut: Cut) -> str:
    rec = cut.recording
    if rec is None:
        raise DataError(f"utterance {cut.id}: has no recording to write to wav.scp")
    if len(rec.sources) != 1:
        raise DataError(
            f"utterance {cut.id}: recording {rec.id} has {len(rec.sources)} audio sources; Kaldi needs one"
        )
    for t in rec.transforms or []:
        name = t["name"] if isinstance(t, dict) else type(t).__name__
        # Resampling is implied (speechfm resamples on load); other effects cannot be kept.
        if name != "Resample":
            raise DataError(
                f"utterance {cut.id}: audio transform {name} cannot be written to a Kaldi dir"
            )
    channels = cut.channel if isinstance(cut.channel, list) else [cut.channel]
    if sorted(channels) != sorted(rec.channel_ids):
        raise DataError(
            f"utterance {cut.id}: uses channels {channels} of recording {rec.id} "
            f"(channels {rec.channel_ids}); a Kaldi wav.scp path always means all channels"
        )
    src = rec.sources[0]
    if src.type == "command":
        return f"{src.source} |"
    if src.type != "file":
        raise DataError(
            f"utterance {cut.id}: {src.type} audio sources cannot be written to wav.scp"
        )
    return str(Path(src.source).absolute())


def export_kaldi_dir(
    cuts: Iterable[Cut], out_dir: str | Path, *, prefix_speaker: bool = False
) -> Path:
    """Write cuts as a Kaldi data dir (see the module docstring for the files).

    ``segments`` is written only when some cut is not a whole recording or a recording
    serves several cuts; otherwise ``wav.scp`` maps utterance ids to paths. Files are
    sorted by key as Kaldi requires.

    Args:
        cuts: cuts with a single-source recording and at most one supervision each.
        out_dir: the directory to create (existing files of the same names are replaced).
        prefix_speaker: prepend ``<speaker>-`` to utterance ids that do not start with
            it, so that sorting by utterance also groups speakers (Kaldi's rule).

    Returns:
        ``out_dir`` as a Path.
    """
    rows = []
    rec_sources: dict[str, str] = {}
    rec_uses: dict[str, int] = defaultdict(int)
    whole = True
    for cut in cuts:
        sups = cut.supervisions
        if len(sups) > 1:
            raise DataError(
                f"utterance {cut.id}: has {len(sups)} supervisions; a Kaldi utterance has one transcript"
            )
        sup = sups[0] if sups else None
        speaker = (sup.speaker if sup is not None else None) or cut.id
        utt = cut.id
        if prefix_speaker and not utt.startswith(f"{speaker}-") and utt != speaker:
            utt = f"{speaker}-{utt}"
        _check_id("utterance id", utt)
        _check_id("speaker id", speaker)
        rec = cut.recording
        value = _wav_scp_value(cut)
        rec_id = _check_id("recording id", rec.id)
        if rec_sources.setdefault(rec_id, value) != value:
            raise DataError(f"recording id {rec_id} points to two different audio sources")
        rec_uses[rec_id] += 1
        if cut.start > 1e-6 or abs(cut.duration - rec.duration) > 1e-3:
            whole = False
        rows.append((utt, rec_id, cut, sup, speaker))

    if len({r[0] for r in rows}) != len(rows):
        seen, dups = set(), set()
        for r in rows:
            (dups if r[0] in seen else seen).add(r[0])
        raise DataError(f"utterance ids repeat, a Kaldi dir cannot hold that: {sorted(dups)[:10]}")
    use_segments = not whole or any(n > 1 for n in rec_uses.values())

    tables: dict[str, dict[str, str]] = defaultdict(dict)
    spk2utt: dict[str, list[str]] = defaultdict(list)
    genders: dict[str, str] = {}
    for utt, rec_id, cut, sup, speaker in rows:
        if use_segments:
            tables["wav.scp"][rec_id] = rec_sources[rec_id]
            tables["segments"][utt] = f"{rec_id} {_fmt_time(cut.start)} {_fmt_time(cut.end)}"
        else:
            tables["wav.scp"][utt] = rec_sources[rec_id]
        tables["text"][utt] = _one_line(sup.text) if sup is not None and sup.text else ""
        tables["utt2spk"][utt] = speaker
        spk2utt[speaker].append(utt)
        tables["utt2dur"][utt] = _fmt_time(cut.duration)
        if sup is not None and sup.language:
            tables["utt2lang"][utt] = sup.language
        ipa = (sup.custom or {}).get("ipa") if sup is not None else None
        if ipa:
            tables["text_ipa"][utt] = _one_line(ipa)
        if sup is not None and sup.gender:
            if genders.setdefault(speaker, sup.gender) != sup.gender:
                raise DataError(
                    f"speaker {speaker} has two genders ({genders[speaker]}, {sup.gender})"
                )
    tables["spk2utt"] = {spk: " ".join(sorted(us)) for spk, us in spk2utt.items()}
    if genders:
        tables["spk2gender"] = genders

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Remove optional files a previous export may have left that this one does not write.
    for name in ("segments", "utt2lang", "text_ipa", "spk2gender", "reco2dur"):
        if name not in tables and (out / name).is_file():
            (out / name).unlink()
    for name, table in tables.items():
        with (out / name).open("w", encoding="utf-8") as f:
            for key in sorted(table):
                value = table[key]
                f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
    return out
