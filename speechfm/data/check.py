"""Data validation: find every unusable utterance in a CutSet and say why.

:func:`check_cuts` is the core used by ``speechfm data check`` and by training code: it
decodes each cut's audio once and reports, per utterance id, every problem it finds:
missing or undecodable audio, audio files whose sample rate is not the one the manifest
declares, empty audio, NaN/Inf samples, duration outside ``[min_duration,
max_duration]``, empty transcript, characters a tokenizer cannot encode, and ids that
occur more than once. Nothing is dropped silently: the
:class:`CheckReport` lists each bad item, and :meth:`CheckReport.select_good` is the
only way items leave a set.

Duplicate ids: every occurrence of a repeated id is bad, identical copies included,
because a set whose ids repeat cannot be trusted to say which copy is meant.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from speechfm.data.audio import (
    DEFAULT_MAX_DURATION,
    EMPTY_AUDIO,
    MISSING_FILE,
    NON_FINITE,
    TOO_LONG,
    UNREADABLE,
    BadAudioError,
    describe_cut,
    load_cut_samples,
    samples_problem,
)
from speechfm.errors import DataError

if TYPE_CHECKING:
    from lhotse import CutSet
    from lhotse.cut import Cut

TOO_SHORT = "too_short"
EMPTY_TEXT = "empty_text"
UNKNOWN_CHARS = "unknown_chars"
DUPLICATE_ID = "duplicate_id"
BAD_ENTRY = "bad_entry"
"""A malformed manifest entry: an unparsable line, a transcript without audio, a bad segment."""
DURATION_MISMATCH = "duration_mismatch"
"""The manifest's duration (e.g. Kaldi utt2dur) disagrees with the audio."""
SAMPLE_RATE_MISMATCH = "sample_rate_mismatch"
"""An audio file's sample rate is not the rate its manifest entry declares (the file was
replaced or resampled after the manifest was written): offsets, durations and the rate
the audio is decoded at would all be wrong."""

AUDIO_REASONS = frozenset({MISSING_FILE, UNREADABLE, EMPTY_AUDIO, NON_FINITE, TOO_LONG,
                           SAMPLE_RATE_MISMATCH})
"""Reasons found by reading the audio; an item flagged with one is not decoded again."""

ALL_REASONS = (
    MISSING_FILE,
    UNREADABLE,
    EMPTY_AUDIO,
    NON_FINITE,
    TOO_SHORT,
    TOO_LONG,
    EMPTY_TEXT,
    UNKNOWN_CHARS,
    DUPLICATE_ID,
    BAD_ENTRY,
    DURATION_MISMATCH,
    SAMPLE_RATE_MISMATCH,
)
"""Every reason a report can give, in the order summaries list them."""


@dataclass(frozen=True)
class ItemProblem:
    """One thing wrong with one item."""

    id: str
    """Utterance (cut) id, or ``file:line`` where a malformed line names none."""
    reason: str
    """Short code, one of :data:`ALL_REASONS`."""
    detail: str
    """Human-readable explanation naming the file or field at fault."""
    index: int | None = None
    """Position of the cut in the checked set; ``None`` for items that never became
    cuts (e.g. a transcript line without audio)."""


class SymbolChecker(Protocol):
    """What :func:`check_cuts` needs from a tokenizer."""

    def unknown_symbols(self, text: str) -> set[str]:
        """The characters of ``text`` the tokenizer cannot encode (empty set if none)."""
        ...


def _unknown_symbols_fn(tokenizer: Any):
    # speechfm tokenizers expose `unknown_symbols`; `covers` is accepted as an alias.
    for name in ("unknown_symbols", "covers"):
        fn = getattr(tokenizer, name, None)
        if callable(fn):
            return fn
    raise DataError(
        f"tokenizer {type(tokenizer).__name__} cannot check text: it has no "
        "unknown_symbols(text) -> set[str] method"
    )


def _describe_chars(chars: Iterable[str]) -> str:
    return ", ".join(f"{c!r} (U+{ord(c):04X})" if len(c) == 1 else repr(c) for c in sorted(chars))


@dataclass
class CheckReport:
    """The outcome of :func:`check_cuts`: every problem of every item."""

    ids: list[str]
    """Ids of the checked cuts, in input order (repeats included)."""
    problems: list[ItemProblem] = field(default_factory=list)
    """All problems found, in input order."""

    @property
    def bad_indices(self) -> set[int]:
        return {p.index for p in self.problems if p.index is not None}

    @property
    def orphan_ids(self) -> list[str]:
        """Bad items that never became cuts (e.g. a transcript without audio)."""
        return list(dict.fromkeys(p.id for p in self.problems if p.index is None))

    @property
    def num_total(self) -> int:
        return len(self.ids) + len(self.orphan_ids)

    @property
    def num_bad(self) -> int:
        return len(self.bad_indices) + len(self.orphan_ids)

    @property
    def num_good(self) -> int:
        return self.num_total - self.num_bad

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts_by_reason(self) -> dict[str, int]:
        """Number of problems per reason (an item may have several)."""
        counts = Counter(p.reason for p in self.problems)
        order = {r: i for i, r in enumerate(ALL_REASONS)}
        return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def problems_by_id(self) -> dict[str, list[ItemProblem]]:
        out: dict[str, list[ItemProblem]] = defaultdict(list)
        for p in self.problems:
            out[p.id].append(p)
        return dict(out)

    def select_good(self, cuts: Iterable[Cut]) -> CutSet:
        """The cuts without problems; ``cuts`` must be the set that was checked."""
        from lhotse import CutSet

        bad = self.bad_indices
        good = []
        for i, cut in enumerate(cuts):
            if i >= len(self.ids) or cut.id != self.ids[i]:
                raise DataError(
                    f"select_good: cut {i} ({cut.id}) is not the item that was checked there"
                )
            if i not in bad:
                good.append(cut)
        return CutSet.from_cuts(good)

    def summary(self) -> str:
        lines = [f"total {self.num_total}, good {self.num_good}, bad {self.num_bad}"]
        for reason, n in self.counts_by_reason().items():
            lines.append(f"  {reason}: {n}")
        return "\n".join(lines)

    def write_tsv(self, path: str | Path) -> None:
        """Write ``id<TAB>reason<TAB>detail`` per problem (with a header line)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            f.write("id\treason\tdetail\n")
            for p in self.problems:
                detail = " ".join(p.detail.split())  # one line, no tabs
                f.write(f"{p.id}\t{p.reason}\t{detail}\n")


def find_duplicate_ids(cuts: Iterable[Cut]) -> list[ItemProblem]:
    """One :data:`DUPLICATE_ID` problem per occurrence of each repeated cut id."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, cut in enumerate(cuts):
        positions[cut.id].append(i)
    out = []
    for cid, idx in positions.items():
        for k, i in enumerate(idx, start=1):
            if len(idx) > 1:
                out.append(
                    ItemProblem(
                        cid, DUPLICATE_ID, f"id occurs {len(idx)} times (this is occurrence {k})", i
                    )
                )
    return sorted(out, key=lambda p: p.index)


def raise_if_problems(problems: list[ItemProblem], source: str, *, show: int = 10) -> None:
    """Raise a :class:`DataError` naming the first ``show`` problems, if there are any."""
    if not problems:
        return
    lines = [f"  {p.id}: {p.reason}: {p.detail}" for p in problems[:show]]
    more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
    raise DataError(
        f"{source}: {len(problems)} problem(s) found; run `speechfm data check {source}` "
        "for the full report and a cleaned copy:\n" + "\n".join(lines) + more
    )


def _texts(cut: Cut, text_field: str) -> list[str | None]:
    if text_field == "text":
        return [s.text for s in cut.supervisions]
    return [(s.custom or {}).get(text_field) for s in cut.supervisions]


def _check_text(
    index: int, cut: Cut, *, text_field: str, require_text: bool, unknown_fn: Any
) -> list[ItemProblem]:
    out: list[ItemProblem] = []
    texts = _texts(cut, text_field)
    if not texts:
        if require_text:
            out.append(
                ItemProblem(cut.id, EMPTY_TEXT, "has no supervision, so no transcript", index)
            )
        return out
    for t in texts:
        if t is None or not t.strip():
            if require_text:
                what = "transcript" if text_field == "text" else f"'{text_field}' transcript"
                out.append(ItemProblem(cut.id, EMPTY_TEXT, f"{what} is empty or missing", index))
            continue
        if unknown_fn is not None:
            unknown = set(unknown_fn(t))
            if unknown:
                out.append(
                    ItemProblem(
                        cut.id,
                        UNKNOWN_CHARS,
                        f"characters not covered by the tokenizer: {_describe_chars(unknown)}",
                        index,
                    )
                )
    return out


def _declared_rate_problem(index: int, cut: Cut) -> ItemProblem | None:
    """A :data:`SAMPLE_RATE_MISMATCH` when a file's header rate is not the rate the
    manifest declares for it (the source rate, before any ``Resample`` transform)."""
    import soundfile as sf

    from speechfm.data.audio import _without_resampling

    rec = getattr(cut, "recording", None)
    if rec is None:
        return None
    base = _without_resampling(rec)
    declared = int((base or rec).sampling_rate)
    if base is None and rec.transforms:
        return None  # other transforms (speed, ...): the declared rate is not the file's
    for src in rec.sources:
        if src.type != "file":
            continue
        try:
            actual = int(sf.info(src.source).samplerate)
        except Exception:  # unreadable: the decoding step reports it
            continue
        if actual != declared:
            return ItemProblem(
                cut.id, SAMPLE_RATE_MISMATCH,
                f"{describe_cut(cut)}: the manifest declares {declared} Hz but the file "
                f"{src.source} is {actual} Hz (re-create the manifest entry from the file, "
                "or restore the file it was made from)", index)
    return None


def _check_audio(
    index: int, cut: Cut, *, min_duration: float, max_duration: float | None
) -> list[ItemProblem]:
    limit = DEFAULT_MAX_DURATION if max_duration is None else max_duration
    # The declared duration is enough to reject absurdly long items without decoding hours.
    if cut.duration > max(limit, DEFAULT_MAX_DURATION):
        return [
            ItemProblem(
                cut.id,
                TOO_LONG,
                f"{describe_cut(cut)}: manifest says it lasts {cut.duration:.1f} s (maximum {limit:g} s)",
                index,
            )
        ]
    mismatch = _declared_rate_problem(index, cut)
    if mismatch is not None:
        return [mismatch]
    try:
        samples, sr = load_cut_samples(cut)
    except BadAudioError as e:
        return [ItemProblem(cut.id, e.reason, str(e), index)]
    where = describe_cut(cut)
    problem = samples_problem(samples, sr, max_duration=None)
    if problem is not None:
        reason, detail = problem
        return [ItemProblem(cut.id, reason, f"{where}: audio {detail}", index)]
    dur = samples.shape[-1] / sr
    if dur < min_duration:
        return [
            ItemProblem(
                cut.id, TOO_SHORT, f"{where}: lasts {dur:.3f} s (minimum {min_duration:g} s)", index
            )
        ]
    if dur > limit:
        return [
            ItemProblem(
                cut.id, TOO_LONG, f"{where}: lasts {dur:.3f} s (maximum {limit:g} s)", index
            )
        ]
    return []


def check_cuts(
    cuts: Iterable[Cut],
    *,
    min_duration: float = 0.0,
    max_duration: float | None = DEFAULT_MAX_DURATION,
    tokenizer: SymbolChecker | Any | None = None,
    text_field: str = "text",
    require_text: bool = True,
    known_problems: Iterable[ItemProblem] = (),
    num_workers: int = 1,
    progress: bool = False,
) -> CheckReport:
    """Check every cut and report each problem by utterance id.

    Args:
        cuts: a CutSet (eager or lazy) or any iterable of cuts.
        min_duration: shortest acceptable audio, seconds.
        max_duration: longest acceptable audio, seconds (``None``: only the absurd-length
            guard of :data:`~speechfm.data.audio.DEFAULT_MAX_DURATION` applies).
        tokenizer: object with ``unknown_symbols(text) -> set[str]``; transcripts with
            symbols it cannot encode are reported.
        text_field: ``"text"`` for ``supervision.text``, or a ``supervision.custom`` key
            such as ``"ipa"`` (checked for emptiness and tokenizer coverage).
        require_text: report cuts without a transcript (turn off for audio-only sets).
        known_problems: problems found earlier (e.g. while importing); merged into the
            report, applied to every cut with that id, and cuts already known to have bad
            audio are not decoded again.
        num_workers: threads decoding audio in parallel (decoders release the GIL).
        progress: show a tqdm progress bar on stderr.

    Returns:
        A :class:`CheckReport`; ``report.ok`` is true when nothing is wrong.
    """
    if text_field != "text" and not text_field.isidentifier():
        raise DataError(
            f"text_field must be 'text' or a supervision.custom key, got {text_field!r}"
        )
    if min_duration < 0 or (max_duration is not None and max_duration < min_duration):
        raise DataError(f"bad duration range [{min_duration}, {max_duration}]")
    unknown_fn = _unknown_symbols_fn(tokenizer) if tokenizer is not None else None
    cut_list = list(cuts)
    ids = [c.id for c in cut_list]
    indices_of: dict[str, list[int]] = defaultdict(list)
    for i, cid in enumerate(ids):
        indices_of[cid].append(i)

    # Spread problems known by id over every cut carrying that id.
    known: dict[int, list[ItemProblem]] = defaultdict(list)
    orphans: list[ItemProblem] = []
    for p in known_problems:
        targets = [p.index] if p.index is not None else indices_of.get(p.id, [])
        if not targets:
            orphans.append(ItemProblem(p.id, p.reason, p.detail, None))
        for i in targets:
            known[i].append(ItemProblem(p.id, p.reason, p.detail, i))

    duplicates = {p.index: p for p in find_duplicate_ids(cut_list)}

    def check_one(i: int) -> list[ItemProblem]:
        cut = cut_list[i]
        found = list(known.get(i, []))
        if i in duplicates:
            found.append(duplicates[i])
        found += _check_text(
            i, cut, text_field=text_field, require_text=require_text, unknown_fn=unknown_fn
        )
        if not any(p.reason in AUDIO_REASONS for p in found):
            found += _check_audio(i, cut, min_duration=min_duration, max_duration=max_duration)
        return found

    from tqdm import tqdm

    bar = tqdm(
        total=len(cut_list),
        desc="checking",
        unit="utt",
        file=sys.stderr,
        disable=None if progress else True,
    )
    per_item: list[list[ItemProblem]] = []
    try:
        if num_workers > 1 and len(cut_list) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=num_workers) as ex:
                for found in ex.map(check_one, range(len(cut_list))):
                    per_item.append(found)
                    bar.update()
        else:
            for i in range(len(cut_list)):
                per_item.append(check_one(i))
                bar.update()
    finally:
        bar.close()
    problems = [p for found in per_item for p in found] + orphans
    return CheckReport(ids=ids, problems=problems)
