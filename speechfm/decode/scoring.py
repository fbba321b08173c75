"""Error rates (WER / CER / PER) with per-utterance alignments, errs files, result tables.

Units:

- ``"word"``: whitespace-separated words;
- ``"char"``: the characters of the words, spaces excluded (so a CER does not count word
  boundaries);
- ``"phone"``: space-separated phones of an IPA transcript, the word separator ``|``
  excluded.

Alignments come from kaldialign (Levenshtein, unit costs); the counts are read off the
alignment itself so the numbers and the errs file always agree. No text normalisation is
applied here: normalise references and hypotheses the same way before scoring.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechfm.errors import DataError

__all__ = [
    "UNITS",
    "ScoreResult",
    "UttAlignment",
    "results_table_markdown",
    "score",
    "score_by_group",
    "split_units",
    "write_errs",
]

UNITS = ("word", "char", "phone")
_RATE_NAMES = {"word": "WER", "char": "CER", "phone": "PER"}
_PHONE_WORD_SEP = "|"
EPS = "*"
"""How an insertion's missing reference (or a deletion's missing hypothesis) is printed."""


def split_units(text: str, unit: str) -> list[str]:
    """The scoring units of ``text`` (see the module doc)."""
    if unit == "word":
        return text.split()
    if unit == "char":
        return [c for c in text if not c.isspace()]
    if unit == "phone":
        return [p for p in text.split() if p != _PHONE_WORD_SEP]
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


@dataclass
class UttAlignment:
    """One utterance's alignment and error counts."""

    utt_id: str
    """Utterance id."""
    ref: list[str]
    """Reference units."""
    hyp: list[str]
    """Hypothesis units."""
    alignment: list[tuple[str | None, str | None]]
    """Aligned pairs: (ref, None) deletion, (None, hyp) insertion, else match/substitution."""
    ins: int
    """Inserted units."""
    dels: int
    """Deleted units."""
    subs: int
    """Substituted units."""

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def ref_len(self) -> int:
        return len(self.ref)


def _rate(errors: int, ref_len: int) -> float:
    if ref_len == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / ref_len


@dataclass
class ScoreResult:
    """Corpus-level error counts and the per-utterance alignments behind them."""

    unit: str
    """Scoring unit: word, char or phone."""
    ins: int = 0
    """Total insertions."""
    dels: int = 0
    """Total deletions."""
    subs: int = 0
    """Total substitutions."""
    ref_len: int = 0
    """Reference units in total (the rate's denominator)."""
    utts: list[UttAlignment] = field(default_factory=list)
    """Per-utterance records, in the order of the reference ids."""

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def rate(self) -> float:
        """errors / ref_len (0 when both are 0, inf for errors against empty references)."""
        return _rate(self.errors, self.ref_len)

    @property
    def percent(self) -> float:
        return 100.0 * self.rate

    @property
    def name(self) -> str:
        """The rate's name: WER, CER or PER."""
        return _RATE_NAMES[self.unit]

    @property
    def num_utts(self) -> int:
        return len(self.utts)

    @property
    def sentence_errors(self) -> int:
        """Utterances with at least one error."""
        return sum(1 for u in self.utts if u.errors)

    def summary(self) -> str:
        """One line, e.g. ``WER 12.50% [ 2 / 16, 1 ins, 0 del, 1 sub ]``."""
        return (
            f"{self.name} {self.percent:.2f}% [ {self.errors} / {self.ref_len}, {self.ins} ins, "
            f"{self.dels} del, {self.subs} sub ]"
        )


def _align(ref: list[str], hyp: list[str]) -> list[tuple[str | None, str | None]]:
    import kaldialign

    # Align integer ids so no real unit can collide with the epsilon symbol.
    vocab = {s: i for i, s in enumerate(dict.fromkeys(ref + hyp))}
    inv = list(vocab)
    pairs = kaldialign.align([vocab[s] for s in ref], [vocab[s] for s in hyp], -1)
    return [(None if a == -1 else inv[a], None if b == -1 else inv[b]) for a, b in pairs]


def _align_utt(utt_id: str, ref_text: str, hyp_text: str, unit: str) -> UttAlignment:
    ref, hyp = split_units(ref_text, unit), split_units(hyp_text, unit)
    alignment = _align(ref, hyp)
    ins = sum(1 for r, _ in alignment if r is None)
    dels = sum(1 for _, h in alignment if h is None)
    subs = sum(1 for r, h in alignment if r is not None and h is not None and r != h)
    return UttAlignment(utt_id, ref, hyp, alignment, ins, dels, subs)


def score(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    *,
    unit: str = "word",
    allow_missing: bool = False,
) -> ScoreResult:
    """Score hypotheses against references.

    Args:
        refs: utterance id -> reference text.
        hyps: utterance id -> hypothesis text.
        unit: "word", "char" or "phone".
        allow_missing: score a reference without hypothesis as an empty hypothesis
            (all deletions) instead of failing.

    Raises:
        DataError: hypotheses without reference, or (unless ``allow_missing``) references
            without hypothesis; the message names some of them.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    extra = [k for k in hyps if k not in refs]
    if extra:
        raise DataError(f"{len(extra)} hypotheses have no reference, e.g. {sorted(extra)[:5]}")
    missing = [k for k in refs if k not in hyps]
    if missing and not allow_missing:
        raise DataError(
            f"{len(missing)} references have no hypothesis, e.g. {sorted(missing)[:5]} "
            "(pass allow_missing=True to score them as empty)"
        )
    result = ScoreResult(unit=unit)
    for utt_id, ref_text in refs.items():
        rec = _align_utt(utt_id, ref_text, hyps.get(utt_id, ""), unit)
        result.utts.append(rec)
        result.ins += rec.ins
        result.dels += rec.dels
        result.subs += rec.subs
        result.ref_len += rec.ref_len
    return result


def score_by_group(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    utt2group: Mapping[str, str],
    *,
    unit: str = "word",
    allow_missing: bool = False,
) -> dict[str, ScoreResult]:
    """:func:`score` separately per group (e.g. per language with a utt2lang mapping).

    Returns:
        group -> result, groups sorted by name.

    Raises:
        DataError: a reference's utterance has no group (the message names it), or as
            :func:`score`.
    """
    ungrouped = [k for k in refs if k not in utt2group]
    if ungrouped:
        raise DataError(f"{len(ungrouped)} utterances have no group, e.g. {sorted(ungrouped)[:5]}")
    extra = [k for k in hyps if k not in refs]
    if extra:
        raise DataError(f"{len(extra)} hypotheses have no reference, e.g. {sorted(extra)[:5]}")
    groups: dict[str, dict[str, str]] = {}
    for utt_id, text in refs.items():
        groups.setdefault(utt2group[utt_id], {})[utt_id] = text
    return {
        g: score(
            groups[g],
            {k: hyps[k] for k in groups[g] if k in hyps},
            unit=unit,
            allow_missing=allow_missing,
        )
        for g in sorted(groups)
    }


# ----------------------------------------------------------------------------- output


def _format_alignment(alignment: Iterable[tuple[str | None, str | None]]) -> str:
    parts = []
    for r, h in alignment:
        if r == h:
            parts.append(str(r))
        else:
            parts.append(f"({EPS if r is None else r}->{EPS if h is None else h})")
    return " ".join(parts)


def write_errs(path: str | Path, result: ScoreResult, *, title: str | None = None) -> Path:
    """Write an icefall-style errs file: rate line, per-utterance alignments, then summary.

    Layout: ``%WER = 12.50`` and an ``Errors:`` line; ``PER-UTT DETAILS`` with one line
    per utterance, matches as-is and errors as ``(ref->hyp)`` (``*`` for nothing);
    then ``SUBSTITUTIONS``, ``DELETIONS``, ``INSERTIONS`` (counts, most frequent first)
    and ``PER-UNIT STATS`` (unit, correct, errors, count in ref, count in hyp).

    Returns:
        ``path`` (parent folders are created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    ins: Counter[str] = Counter()
    corr: Counter[str] = Counter()
    errs: Counter[str] = Counter()
    in_ref: Counter[str] = Counter()
    in_hyp: Counter[str] = Counter()
    for u in result.utts:
        in_ref.update(u.ref)
        in_hyp.update(u.hyp)
        for r, h in u.alignment:
            if r is None:
                ins[h] += 1
                errs[h] += 1
            elif h is None:
                dels[r] += 1
                errs[r] += 1
            elif r != h:
                subs[(r, h)] += 1
                errs[r] += 1
                errs[h] += 1
            else:
                corr[r] += 1
    unit_word = {"word": "words", "char": "characters", "phone": "phones"}[result.unit]
    lines = []
    if title:
        lines.append(title)
    lines.append(f"%{result.name} = {result.percent:.2f}")
    lines.append(
        f"Errors: {result.ins} insertions, {result.dels} deletions, {result.subs} "
        f"substitutions, over {result.ref_len} reference {unit_word} "
        f"({result.ref_len - result.dels - result.subs} correct)"
    )
    lines.append(f"Sentence errors: {result.sentence_errors} of {result.num_utts} utterances")
    lines.append(
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
        "DELETIONS:, INSERTIONS:, PER-UNIT STATS:"
    )
    lines.append("")
    lines.append("PER-UTT DETAILS: corr or (ref->hyp)")
    for u in result.utts:
        lines.append(f"{u.utt_id}:\t{_format_alignment(u.alignment)}")
    lines.append("")
    lines.append("SUBSTITUTIONS: count ref -> hyp")
    for (r, h), c in sorted(subs.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{c}   {r} -> {h}")
    lines.append("")
    lines.append("DELETIONS: count ref")
    for r, c in sorted(dels.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{c}   {r}")
    lines.append("")
    lines.append("INSERTIONS: count hyp")
    for h, c in sorted(ins.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{c}   {h}")
    lines.append("")
    lines.append("PER-UNIT STATS: unit  corr tot_errs count_in_ref count_in_hyp")
    units = set(in_ref) | set(in_hyp)
    for w in sorted(units, key=lambda w: (-errs[w], w)):
        lines.append(f"{w}   {corr[w]} {errs[w]} {in_ref[w]} {in_hyp[w]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, ScoreResult):
        value = value.percent
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = "inf" if math.isinf(value) else f"{value:.{digits}f}"
    elif value is None:
        text = ""
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def results_table_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    float_digits: int = 2,
) -> str:
    """A Markdown table for RESULTS.md.

    Args:
        rows: one mapping per row; a :class:`ScoreResult` value prints as its percentage,
            floats with ``float_digits`` decimals, missing keys as empty cells.
        columns: column order; default: keys in order of first appearance.

    Returns:
        The table, ending in a newline.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        raise ValueError("a results table needs at least one column")
    header = "| " + " | ".join(_cell(c, float_digits) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_cell(row.get(c), float_digits) for c in columns) + " |" for row in rows
    ]
    return "\n".join([header, rule, *body]) + "\n"
