"""Subsets of labelled CutSets for classification: label counts, few-shot, unlabelled pools.

For classification corpora (``prepare_speech_commands12``, ``prepare_fsdd_classification``)
the class label is the supervision ``text``; one supervision per cut.

* ``label_counts(cuts)`` / ``split_summary({"train": cuts, ...})``: clips, speakers and
  clips per label.
* ``few_shot(cuts, k, seed)``: exactly ``k`` cuts of every label, the same ones for the
  same seed (each label drawn with its own generator, so the draw of one label does not
  depend on the others).
* ``merge_unlabelled(a, b, ...)``: one CutSet of the same recordings without labels
  (supervision ``text`` and ``custom`` dropped, ``speaker`` too unless asked to keep it,
  since the speaker is the label of speaker identification).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from speechfm.errors import DataError

LABEL_FIELDS = ("text", "speaker")
"""What a cut's class label can be."""


def cut_label(cut, label_field: str = "text") -> str:
    """The class label of a cut: its single supervision's text (``label_field="text"``:
    keywords, digits) or speaker (``"speaker"``: speaker identification).

    Raises:
        DataError: not exactly one supervision, or an empty label (the cut is named).
        ValueError: an unknown ``label_field``.
    """
    if label_field not in LABEL_FIELDS:
        raise ValueError(f"label_field must be one of {LABEL_FIELDS}, got {label_field!r}")
    sups = cut.supervisions
    if len(sups) != 1:
        raise DataError(f"cut {cut.id}: expected exactly one supervision (the label), found {len(sups)}")
    value = getattr(sups[0], label_field)
    if not value:
        raise DataError(f"cut {cut.id}: its supervision has no {label_field} (label)")
    return str(value).strip()


def label_counts(cuts) -> dict[str, int]:
    """Clips per label (supervision text), sorted by label."""
    return dict(sorted(Counter(cut_label(c) for c in cuts).items()))


def split_summary(cuts_by_split: dict) -> dict[str, dict]:
    """``{split: {"clips", "speakers", "hours", "labels": {label: clips}}}``."""
    out = {}
    for split, cuts in cuts_by_split.items():
        cuts = list(cuts)
        out[split] = {
            "clips": len(cuts),
            "speakers": len({s.speaker for c in cuts for s in c.supervisions}),
            "hours": round(sum(c.duration for c in cuts) / 3600, 4),
            "labels": label_counts(cuts),
        }
    return out


def few_shot(cuts, k: int, seed: int = 0):
    """``k`` cuts of every label (supervision text), deterministic given ``seed``.

    The cuts of a label are sorted by id and ``k`` are drawn with a generator seeded by
    ``(seed, label)``; the result keeps the input order. Raises DataError when ``k < 1``,
    a cut has no label, or a label has fewer than ``k`` cuts (all such labels named).
    """
    from lhotse import CutSet

    if k < 1:
        raise DataError(f"few_shot: k must be at least 1, got {k}")
    cuts = list(cuts)
    by_label: dict[str, list[str]] = defaultdict(list)
    for c in cuts:
        by_label[cut_label(c)].append(c.id)
    if not by_label:
        raise DataError("few_shot: the cut set is empty")
    short = {lab: len(ids) for lab, ids in sorted(by_label.items()) if len(ids) < k}
    if short:
        raise DataError(f"few_shot: k={k} but these labels have fewer cuts: {short}")
    chosen: set[str] = set()
    for lab, ids in sorted(by_label.items()):
        rng = random.Random(f"{seed}/{lab}")
        chosen.update(rng.sample(sorted(ids), k))
    return CutSet.from_cuts(c for c in cuts if c.id in chosen)


def merge_unlabelled(*cutsets: Iterable, keep_speaker: bool = False):
    """One CutSet of all cuts of ``cutsets`` with their labels removed.

    Every supervision keeps its timing and language but loses ``text``, ``custom``
    (which may hold ``ipa``/``word``) and ``alignment``; ``speaker`` is dropped too
    unless ``keep_speaker``. Recordings are untouched. Raises DataError naming the
    repeated cut ids (and which inputs hold them) when an id occurs twice.
    """
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    where: dict[str, list[int]] = defaultdict(list)
    out = []
    for i, cs in enumerate(cutsets):
        for c in cs:
            where[c.id].append(i)
            sups = [
                fastcopy(s, text=None, custom=None, alignment=None,
                         speaker=s.speaker if keep_speaker else None)
                for s in c.supervisions
            ]
            out.append(fastcopy(c, supervisions=sups))
    dups = {cid: idx for cid, idx in where.items() if len(idx) > 1}
    if dups:
        shown = ", ".join(f"{cid!r} (inputs {idx})" for cid, idx in list(dups.items())[:10])
        more = f" and {len(dups) - 10} more" if len(dups) > 10 else ""
        raise DataError(f"merge_unlabelled: {len(dups)} cut id(s) occur more than once: {shown}{more}")
    return CutSet.from_cuts(out)
