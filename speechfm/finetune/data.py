"""The data stage of ``speechfm finetune``: read any supported data set, validate it item by
item, and hold out dev and test sets.

Formats (:func:`detect_data_format`): a Kaldi data dir (``wav.scp`` with ``text``,
``utt2spk``, ``segments``, ...), a lhotse manifest (a cuts file, or a directory holding a
cuts manifest or recordings + supervisions manifests), a TSV with a header (``path``,
``text``, ``speaker``, ... as :mod:`speechfm.data.tabular` reads) or without one
(``path<TAB>text`` lines), or a path-JSONL. Reading reuses :mod:`speechfm.data.manifest`
/ :mod:`speechfm.data.kaldi` / :mod:`speechfm.data.tabular`; validation is
:func:`speechfm.data.check.check_cuts` (``speechfm data check``'s function): every bad item
is reported by name with its reason and left out, nothing is dropped silently.

The held-out split (:func:`held_out_split`) is deterministic (a hash of seed and group key
orders the groups, whatever the input order), speaker-disjoint when every utterance has a
speaker and there are at least :data:`MIN_SPEAKERS_FOR_SPEAKER_SPLIT` of them, otherwise
text-disjoint (utterances with the same normalised transcript stay together), and sized as
a fraction of the data's duration (capped).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechfm.errors import DataError

if TYPE_CHECKING:
    from lhotse import CutSet

    from speechfm.data.check import CheckReport, ItemProblem

__all__ = [
    "CheckedData",
    "MIN_SPEAKERS_FOR_SPEAKER_SPLIT",
    "Split",
    "detect_data_format",
    "held_out_split",
    "mix_related",
    "read_checked",
    "read_data",
    "set_language",
    "summarize",
]

MIN_SPEAKERS_FOR_SPEAKER_SPLIT = 5
"""Fewest speakers for a speaker-disjoint split (with fewer, one speaker would be a large
share of a held-out set, and the split is text-disjoint instead)."""

OTHER_LANGUAGE = "other_language"
"""Reason given to items of a data set labelled with another language than ``--lang``."""

_LHOTSE_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")


def _lhotse_files(directory: Path, kind: str) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and kind in p.name and p.name.endswith(_LHOTSE_SUFFIXES))


def _looks_like_header(first_line: str) -> bool:
    from speechfm.data.tabular import KNOWN_KEYS

    cells = [c.strip() for c in first_line.split("\t")]
    return "path" in cells and all(c in KNOWN_KEYS for c in cells)


def detect_data_format(path: str | os.PathLike) -> str:
    """``"kaldi"``, ``"lhotse"`` (a cuts/recordings file), ``"lhotse_dir"`` (a directory of
    cuts, or recordings + supervisions manifests), ``"tsv"`` (with a header),
    ``"tsv_noheader"`` (``path<TAB>text`` lines) or ``"jsonl"`` (path records).

    Raises:
        DataError: it does not exist, or is none of these (what was found is said).
    """
    from speechfm.data.manifest import detect_format

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir():
        if (p / "wav.scp").is_file():
            return "kaldi"
        if _lhotse_files(p, "cuts") or _lhotse_files(p, "recordings"):
            return "lhotse_dir"
        raise DataError(f"{p}: a directory but neither a Kaldi data dir (no wav.scp) nor a lhotse "
                        "manifest directory (no *cuts*.jsonl.gz or *recordings*.jsonl.gz)")
    if p.name.lower().endswith((".tsv", ".txt")):
        with p.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        if not first:
            raise DataError(f"{p}: empty")
        if _looks_like_header(first):
            return "tsv"
        if len(first.rstrip("\n").split("\t")) == 2:
            return "tsv_noheader"
        raise DataError(f"{p}: neither a TSV with a header (path, text, ...) nor path<TAB>text lines")
    return detect_format(p)


def _read_lhotse_dir(p: Path) -> CutSet:
    from lhotse import CutSet, load_manifest

    def one(kind: str) -> Path | None:
        files = _lhotse_files(p, kind)
        if len(files) > 1:
            raise DataError(f"{p}: several {kind} manifests ({', '.join(f.name for f in files)}); "
                            "give the file itself")
        return files[0] if files else None

    cuts_file = one("cuts")
    if cuts_file is not None:
        from speechfm.data.manifest import read_manifest

        return read_manifest(cuts_file)[0]
    recordings, supervisions = one("recordings"), one("supervisions")
    try:
        cuts = CutSet.from_manifests(
            recordings=load_manifest(recordings),
            supervisions=load_manifest(supervisions) if supervisions is not None else None)
    except Exception as e:  # lhotse raises several kinds for foreign files
        raise DataError(f"{p}: cannot read its lhotse manifests ({e})") from e
    return cuts


def _read_tsv_noheader(p: Path, num_jobs: int) -> tuple[CutSet, list[ItemProblem]]:
    """``path<TAB>text`` lines, read as a TSV with a header (paths made absolute)."""
    from speechfm.data.check import BAD_ENTRY, ItemProblem
    from speechfm.data.tabular import read_tsv

    problems: list[ItemProblem] = []
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 2 or not cells[0].strip():
            problems.append(ItemProblem(f"{p.name}:{n}", BAD_ENTRY,
                                        f"{p}:{n}: expected 'path<TAB>text', got {len(cells)} cells"))
            continue
        path = Path(cells[0].strip())
        rows.append(f"{path if path.is_absolute() else (p.parent / path).resolve()}\t{cells[1]}")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / p.name
        table.write_text("path\ttext\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
        cuts, more = read_tsv(table, num_jobs=num_jobs)
    return cuts, problems + more


def read_data(path: str | os.PathLike, *, num_jobs: int = 2) -> tuple[CutSet, list[ItemProblem], str]:
    """Read a data set leniently: ``(cuts, problems found while importing, format)``.

    Cuts with several supervisions (a lhotse recording with its segments) become one cut
    per supervision.
    """
    from speechfm.data.manifest import read_manifest

    p = Path(path)
    fmt = detect_data_format(p)
    if fmt == "lhotse_dir":
        cuts, problems = _read_lhotse_dir(p), []
    elif fmt == "tsv_noheader":
        cuts, problems = _read_tsv_noheader(p, num_jobs)
    else:
        cuts, problems = read_manifest(p, num_jobs=num_jobs)
    cuts = cuts.to_eager()
    if any(len(c.supervisions) > 1 for c in cuts):
        cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    return cuts, problems, fmt


@dataclass
class CheckedData:
    """A data set read and validated: the good cuts, the report, where it came from."""

    source: str
    format: str
    cuts: list
    """The good cuts (lhotse), sorted by id."""
    report: CheckReport

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "items": self.report.num_total,
                "bad": self.report.num_bad, "bad_by_reason": self.report.counts_by_reason(),
                **summarize(self.cuts)}


def read_checked(path: str | os.PathLike, *, lang: str | None, require_text: bool = True,
                 min_duration: float = 0.0, max_duration: float = 30.0, num_jobs: int = 2,
                 echo=print) -> CheckedData:
    """Read ``path``, validate every item (audio decoded, durations, transcripts, ids) and
    keep the good ones; each bad item is echoed as ``BAD <id> <reason> <detail>``.

    ``lang``: the language of the set. Items labelled with another language are left out
    (reason ``other_language``) when some item carries ``lang``; when none does, the labels
    are taken for another code of the same language and replaced. Every kept cut is
    labelled ``lang``. None leaves the labels alone.
    """
    from speechfm.data.check import ItemProblem, check_cuts

    cuts, problems, fmt = read_data(path, num_jobs=num_jobs)
    if lang is not None:
        labels = {s.language for c in cuts for s in c.supervisions if s.language}
        if lang in labels:
            problems = problems + [
                ItemProblem(c.id, OTHER_LANGUAGE, f"labelled {c.supervisions[0].language!r}, not {lang!r}")
                for c in cuts if c.supervisions and c.supervisions[0].language not in (None, lang)]
    report = check_cuts(cuts, min_duration=min_duration, max_duration=max_duration,
                        require_text=require_text, known_problems=problems,
                        num_workers=max(1, num_jobs))
    for p in report.problems:
        echo(f"BAD\t{p.id}\t{p.reason}\t{' '.join(p.detail.split())}")
    good = sorted(report.select_good(cuts), key=lambda c: c.id)
    if lang is not None:
        good = set_language(good, lang)
    if not good:
        raise DataError(f"{path}: no usable item ({report.summary()})")
    return CheckedData(str(path), fmt, good, report)


def set_language(cuts: Iterable, lang: str) -> list:
    """The cuts with every supervision's language set to ``lang``."""
    from lhotse.utils import fastcopy

    return [fastcopy(c, supervisions=[fastcopy(s, language=lang) for s in c.supervisions])
            for c in cuts]


def summarize(cuts: Sequence) -> dict[str, Any]:
    """Utterances, hours and speakers (None when some utterance has no speaker)."""
    speakers = [c.supervisions[0].speaker if c.supervisions else None for c in cuts]
    return {"utterances": len(cuts), "hours": round(sum(c.duration for c in cuts) / 3600, 4),
            "speakers": None if any(s is None for s in speakers) else len(set(speakers))}


def _hash_order(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def _text_key(cut) -> str:
    text = " ".join(s.text or "" for s in cut.supervisions)
    return " ".join(text.lower().split())


@dataclass
class Split:
    """What :func:`held_out_split` made."""

    sets: dict[str, list]
    """``train`` and each held-out set: cuts sorted by id."""
    by: str
    """``speaker`` or ``text``: what the sets are disjoint in."""
    info: dict[str, Any] = field(default_factory=dict)
    """Sizes and the rule applied (printed, and stored in data.json)."""


def held_out_split(cuts: Sequence, *, names: Sequence[str] = ("dev", "test"),
                   fraction: float = 0.1, max_hours: float = 1.0, seed: int = 0) -> Split:
    """Hold out sets ``names`` from ``cuts``; the rest is ``train``.

    Groups of utterances (a speaker's, when every utterance has a speaker and there are at
    least :data:`MIN_SPEAKERS_FOR_SPEAKER_SPLIT` speakers; else those with one normalised
    transcript) are ordered by a hash of (seed, group key) and given to each held-out set in
    turn until it holds ``fraction`` of the data's duration (at most ``max_hours``, at least
    one group). The result depends on the cuts and the seed only, not on their order.

    Raises:
        DataError: too few groups to leave any for training.
    """
    if not 0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction}")
    cuts = sorted(cuts, key=lambda c: c.id)
    speakers = [c.supervisions[0].speaker if c.supervisions else None for c in cuts]
    num_speakers = len(set(speakers))
    if None not in speakers and num_speakers >= MIN_SPEAKERS_FOR_SPEAKER_SPLIT:
        by, keys = "speaker", speakers
        why = f"speaker-disjoint: {num_speakers} speakers"
    else:
        by, keys = "text", [_text_key(c) for c in cuts]
        why = ("text-disjoint: speakers unknown" if None in speakers else
               f"text-disjoint: only {num_speakers} speaker(s) (< {MIN_SPEAKERS_FOR_SPEAKER_SPLIT})")
    groups: dict[str, list] = defaultdict(list)
    for key, cut in zip(keys, cuts, strict=True):
        groups[key].append(cut)
    if len(groups) < len(names) + 1:
        raise DataError(f"only {len(groups)} distinct {by}(s) in {len(cuts)} utterances: too few "
                        f"to hold out {', '.join(names)} and keep some for training; give "
                        "--dev and --test")
    order = sorted(groups, key=lambda k: _hash_order(k, seed))
    total = sum(c.duration for c in cuts)
    target = min(fraction * total, max_hours * 3600)
    sets: dict[str, list] = {}
    at = 0
    for name in names:
        chosen: list = []
        while at < len(order) - 1 and (not chosen or sum(c.duration for c in chosen) < target):
            chosen += groups[order[at]]
            at += 1
        sets[name] = sorted(chosen, key=lambda c: c.id)
    sets["train"] = sorted((c for k in order[at:] for c in groups[k]), key=lambda c: c.id)
    if not sets["train"] or any(not sets[n] for n in names):
        raise DataError(f"{len(cuts)} utterances are too few to hold out {', '.join(names)}; "
                        "give --dev and --test")
    info = {"by": by, "rule": why, "seed": seed, "fraction": fraction, "max_hours": max_hours,
            **{name: summarize(sets[name]) for name in ("train", *names)}}
    return Split({"train": sets["train"], **{n: sets[n] for n in names}}, by, info)


def mix_related(train: Sequence, related: Sequence, *, ratio: float, seed: int = 0
                ) -> tuple[list, dict[str, Any]]:
    """``train`` plus related-language cuts amounting to about ``ratio`` times its duration
    (all of them if there are fewer), chosen by a hash of (seed, id); their ids get the
    prefix ``related-`` (no clash with the new language's).

    Returns:
        (the mixed training cuts sorted by id, what was taken).
    """
    if ratio <= 0:
        raise ValueError(f"related ratio must be > 0, got {ratio}")
    budget = ratio * sum(c.duration for c in train)
    taken, seconds = [], 0.0
    for cut in sorted(related, key=lambda c: _hash_order(c.id, seed)):
        if seconds >= budget:
            break
        taken.append(cut.with_id(f"related-{cut.id}"))
        seconds += cut.duration
    langs = Counter(c.supervisions[0].language if c.supervisions else None for c in taken)
    info = {"ratio": ratio, "available": summarize(related), "taken": summarize(taken),
            "languages": {str(k): v for k, v in langs.items()}}
    return sorted([*train, *taken], key=lambda c: c.id), info
