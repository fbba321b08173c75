"""Subsets of labelled CutSets: label counts, few-shot, unlabelled pools, language resampling.

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

For multilingual ASR corpora the grouping is the supervision ``language``:

* ``language_counts(cuts)``: cuts per language.
* ``language_resample(cuts, temperature, seed)``: a finite manifest in which small
  languages' cuts are repeated so that language shares follow temperature sampling
  (shares proportional to ``n_l ** (1 / temperature)``); no cut is dropped.
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


def _cut_language(cut) -> str:
    """The language of a cut: the one language its supervisions are in.

    Raises:
        DataError: the cut has no supervision, a supervision has no language, or its
            supervisions are in more than one language (the cut is named).
    """
    sups = cut.supervisions
    if not sups:
        raise DataError(f"cut {cut.id}: it has no supervision, so no language")
    langs = {s.language for s in sups}
    if None in langs or "" in langs:
        raise DataError(f"cut {cut.id}: a supervision has no language")
    if len(langs) > 1:
        raise DataError(f"cut {cut.id}: its supervisions are in several languages {sorted(langs)}")
    return langs.pop()


def language_counts(cuts) -> dict[str, int]:
    """Cuts per language (the supervisions' language), sorted by language.

    Raises:
        DataError: a cut has no language, or more than one (the cut is named).
    """
    return dict(sorted(Counter(_cut_language(c) for c in cuts).items()))


def language_resample(cuts, temperature: float = 1.0, seed: int = 0, *,
                      max_copies: int | None = None):
    """Repeat the cuts of small languages so that language shares follow temperature sampling.

    Language ``l`` with ``n_l`` cuts gets the target share ``p_l`` proportional to
    ``n_l ** (1 / temperature)``: ``temperature=1`` keeps the natural shares (nothing is
    repeated), larger temperatures flatten them, and ``float("inf")`` balances the
    languages. The result is a finite manifest: every input cut is kept once, in input
    order, and copies of cuts follow, so that language ``l`` has
    ``max(n_l, round(N * p_l))`` cuts, where ``N`` is the smallest total at which no
    language would lose cuts. For ``temperature >= 1`` that is the total at which the
    largest language keeps its count; below 1 the smallest language keeps its count and
    the larger ones are repeated.

    A language that needs ``extra`` copies of its ``n`` cuts gives every cut
    ``extra // n`` copies and one more copy to ``extra % n`` cuts, drawn without
    replacement from the language's cuts sorted by id with
    ``numpy.random.default_rng([seed, crc32(language)])``: the same ``seed`` gives the same
    manifest, whatever the order of the input, and each language's draw does not depend
    on the other languages. Copy ``k`` (1, 2, ...) of cut ``<id>`` is the same cut with
    id ``<id>_r<k>`` (``Cut.with_id``; its recording, features and supervisions are
    shared with the original). Copies come after all originals, first copies first, each
    group in input order.

    Args:
        cuts: a CutSet (or any iterable of cuts) whose cuts each have a language.
        temperature: sampling temperature, > 0 (``float("inf")`` allowed).
        seed: which cuts of a language get the remainder copies; a non-negative integer.
        max_copies: at most this many copies of any one cut (None: no limit; 0: nothing
            is repeated). A language that would need more keeps fewer cuts than its
            target share.

    Returns:
        A new eager CutSet.

    Raises:
        ValueError: ``temperature`` is not > 0, or ``max_copies`` or ``seed`` is negative.
        DataError: a cut has no language or several (the cut is named), or a copy's id is
            already the id of another cut.
    """
    import zlib

    import numpy as np
    from lhotse import CutSet

    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_copies is not None and max_copies < 0:
        raise ValueError(f"max_copies must be >= 0 or None, got {max_copies}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    cuts = list(cuts)
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cuts):
        by_lang[_cut_language(c)].append(i)
    if not cuts:
        return CutSet.from_cuts([])

    counts = {lang: len(idx) for lang, idx in by_lang.items()}
    exponent = 1.0 / temperature
    # target_l = scale * n_l ** exponent, with the smallest scale at which target_l >= n_l
    scale = max(n ** (1.0 - exponent) for n in counts.values())
    copies = [0] * len(cuts)
    for lang, idx in sorted(by_lang.items()):
        n = counts[lang]
        target = max(n, round(scale * n ** exponent))
        if max_copies is not None:
            target = min(target, n * (1 + max_copies))
        full, rest = divmod(target - n, n)
        for i in idx:
            copies[i] = full
        if rest:
            order = sorted(idx, key=lambda i: cuts[i].id)
            rng = np.random.default_rng([seed, zlib.crc32(lang.encode("utf-8"))])
            for j in rng.choice(n, size=rest, replace=False):
                copies[order[j]] += 1

    out = list(cuts)
    for k in range(1, max(copies) + 1):
        out.extend(c.with_id(f"{c.id}_r{k}") for c, m in zip(cuts, copies, strict=True) if m >= k)
    seen = Counter(c.id for c in out)
    dups = sorted(cid for cid, m in seen.items() if m > 1)
    if dups:
        more = f" and {len(dups) - 10} more" if len(dups) > 10 else ""
        raise DataError(f"language_resample: these cut ids occur more than once (in the input, "
                        f"or a copy's id is taken): {dups[:10]}{more}")
    return CutSet.from_cuts(out)
