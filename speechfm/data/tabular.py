"""Import simple tables of utterances: a TSV with a header, or JSONL with the same keys.

Columns/keys (``path`` is required, the rest optional):

* ``path``: audio file; relative paths are relative to the table's own directory,
* ``text``: orthographic transcript,
* ``lang`` (or ``language``): ISO 639 code,
* ``speaker``: speaker/voice id,
* ``id``: utterance id; when absent it is made from the path relative to the common
  folder of all paths, with ``/`` turned into ``-`` and the extension dropped
  (``yes/0a7c_nohash_0.wav`` -> ``yes-0a7c_nohash_0``), so files with equal names in
  different folders keep distinct ids,
* ``ipa``: IPA transcript (``supervision.custom["ipa"]``).

Unknown columns are refused (a typo such as ``paht`` would otherwise lose data). Empty
cells mean "not given". Each row is one cut covering its whole file.

TSV cells are split on tabs only (no quoting), so transcripts may hold quotes and commas.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechfm.data.audio import (
    DEFAULT_MAX_DURATION,
    BadAudioError,
    probe_recording,
    unprobed_recording,
)
from speechfm.data.check import BAD_ENTRY, ItemProblem, find_duplicate_ids, raise_if_problems
from speechfm.data.manifest import make_cut
from speechfm.errors import DataError

if TYPE_CHECKING:
    from lhotse import CutSet

KNOWN_KEYS = ("id", "path", "text", "lang", "language", "speaker", "ipa")
"""Columns a TSV may have / keys a JSONL record may have."""


def _norm_row(where: str, raw: dict[str, Any]) -> dict[str, str | None]:
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown column(s) {unknown}; allowed: {', '.join(KNOWN_KEYS)}")
    row: dict[str, str | None] = {}
    for key in KNOWN_KEYS:
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            if isinstance(v, (dict, list)):
                raise DataError(f"{where}: '{key}' must be a string, got {type(v).__name__}")
            v = str(v)
        row[key] = v
    if row["language"] is not None and row["lang"] is None:
        row["lang"] = row["language"]
    del row["language"]
    # Empty cells are "not given", except that an empty transcript stays empty
    # (so that checks can report it).
    for key in ("id", "path", "lang", "speaker", "ipa"):
        if row[key] is not None and not row[key].strip():
            row[key] = None
    return row


def _auto_ids(paths: list[str]) -> list[str]:
    if not paths:
        return []
    parents = [os.path.dirname(p) for p in paths]
    root = os.path.commonpath(parents)
    out = []
    for p in paths:
        rel = os.path.splitext(os.path.relpath(p, root))[0]
        out.append("_".join(rel.replace(os.sep, "-").split()))
    return out


def _rows_to_cuts(
    rows: list[tuple[str, dict[str, str | None]]],
    base_dir: Path,
    *,
    num_jobs: int,
    max_duration: float | None,
) -> tuple[CutSet, list[ItemProblem]]:
    from lhotse import CutSet

    problems: list[ItemProblem] = []
    kept: list[tuple[dict[str, str | None], str]] = []
    for where, row in rows:
        if row["path"] is None:
            problems.append(ItemProblem(row["id"] or where, BAD_ENTRY, f"{where}: no audio path"))
            continue
        p = Path(row["path"])
        path = str(p if p.is_absolute() else (base_dir / p).absolute())
        if row["id"] is not None and any(c.isspace() for c in row["id"]):
            problems.append(ItemProblem(row["id"], BAD_ENTRY, f"{where}: id contains whitespace"))
            continue
        kept.append((row, path))

    missing_ids = [path for row, path in kept if row["id"] is None]
    auto = iter(_auto_ids(missing_ids))
    ids = [row["id"] if row["id"] is not None else next(auto) for row, _ in kept]

    def probe(item: tuple[str, str]):
        utt, path = item
        try:
            return probe_recording(path, utt, max_duration=max_duration)
        except BadAudioError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as ex:
        recs = list(ex.map(probe, zip(ids, [p for _, p in kept], strict=True)))

    cuts = []
    for utt, (row, path), rec in zip(ids, kept, recs, strict=True):
        if isinstance(rec, BadAudioError):
            problems.append(ItemProblem(utt, rec.reason, str(rec)))
            rec = unprobed_recording(path, utt, duration=0.0)
        cuts.append(
            make_cut(
                utt,
                rec,
                text=row["text"],
                language=row["lang"],
                speaker=row["speaker"],
                ipa=row["ipa"],
            )
        )
    return CutSet.from_cuts(cuts), problems


def read_tsv(
    path: str | Path, *, num_jobs: int = 4, max_duration: float | None = DEFAULT_MAX_DURATION
) -> tuple[CutSet, list[ItemProblem]]:
    """Import a TSV leniently: ``(cuts, problems)``; no row is dropped unreported."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].strip():
        raise DataError(
            f"{path}: empty, expected a header line such as 'path<TAB>text<TAB>lang<TAB>speaker'"
        )
    header = [h.strip() for h in lines[0].split("\t")]
    if "path" not in header:
        raise DataError(f"{path}: the header {header} has no 'path' column")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header {header} repeats a column")
    _norm_row(f"{path}:1", dict.fromkeys(header, ""))  # rejects unknown columns up front
    rows = []
    problems: list[ItemProblem] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        where = f"{path.name}:{n}"
        if len(cells) != len(header):
            problems.append(
                ItemProblem(
                    where, BAD_ENTRY, f"{path}:{n}: {len(cells)} cells for {len(header)} columns"
                )
            )
            continue
        rows.append((where, _norm_row(where, dict(zip(header, cells, strict=True)))))
    cuts, more = _rows_to_cuts(rows, path.parent, num_jobs=num_jobs, max_duration=max_duration)
    return cuts, problems + more


def read_jsonl(
    path: str | Path, *, num_jobs: int = 4, max_duration: float | None = DEFAULT_MAX_DURATION
) -> tuple[CutSet, list[ItemProblem]]:
    """Import a JSONL of ``{"path": ..., "text": ..., ...}`` records leniently."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    problems: list[ItemProblem] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(ItemProblem(where, BAD_ENTRY, f"{path}:{n}: not valid JSON ({e})"))
                continue
            if not isinstance(raw, dict):
                problems.append(ItemProblem(where, BAD_ENTRY, f"{path}:{n}: not a JSON object"))
                continue
            rows.append((where, _norm_row(where, raw)))
    cuts, more = _rows_to_cuts(rows, path.parent, num_jobs=num_jobs, max_duration=max_duration)
    return cuts, problems + more


def load_tsv(path: str | Path, *, num_jobs: int = 4) -> CutSet:
    """Import a TSV as a CutSet, raising a DataError that lists any bad rows."""
    cuts, problems = read_tsv(path, num_jobs=num_jobs)
    raise_if_problems(problems + find_duplicate_ids(cuts), str(path))
    return cuts


def load_jsonl(path: str | Path, *, num_jobs: int = 4) -> CutSet:
    """Import a path-JSONL as a CutSet, raising a DataError that lists any bad rows."""
    cuts, problems = read_jsonl(path, num_jobs=num_jobs)
    raise_if_problems(problems + find_duplicate_ids(cuts), str(path))
    return cuts
