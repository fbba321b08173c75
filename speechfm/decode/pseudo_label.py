"""Pseudo-labels for noisy-student training: a teacher transcribes unlabelled audio.

A teacher ASR model (any model with ``recognize``: CTC or transducer, with or without
language-keyed adapters) transcribes unlabelled cuts; each transcript is scored by its
per-token confidences, the confident ones are kept and written back into the cuts as
their supervision text, and a student trains on them (with a few labelled cuts).

- :func:`pseudo_label`: one :class:`PseudoLabel` per cut the teacher could read, in the
  order of the input cuts.
- :func:`filter_pseudo_labels`: keep labels above a confidence and length, optionally only
  the most confident fraction of them.
- :func:`pseudo_label_cuts`: the kept labels as a CutSet to train on (supervision
  ``text`` replaced, ``custom["pseudo_label"] = True`` and ``custom["confidence"]``).
- :func:`pseudo_label_stats`: counts, kept fraction, mean confidence and, given true
  transcripts, the CER/WER of the kept labels (and of all labels, for comparison).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from speechfm.errors import DataError

__all__ = [
    "PseudoLabel",
    "filter_pseudo_labels",
    "pseudo_label",
    "pseudo_label_cuts",
    "pseudo_label_stats",
]

log = logging.getLogger("speechfm.decode")

METHODS = ("greedy", "beam")


@dataclass
class PseudoLabel:
    """The teacher's transcript of one cut and how sure it was."""

    cut_id: str
    """Id of the transcribed cut."""
    text: str
    """The hypothesis as the tokenizer decodes it (normalised text, or phones for IPA)."""
    tokens: list[int]
    """The hypothesis' token ids."""
    confidence: float
    """Mean of the per-token confidences, in [0, 1]; 0.0 for an empty hypothesis."""
    min_confidence: float
    """Smallest per-token confidence; 0.0 for an empty hypothesis."""
    num_tokens: int
    """Number of tokens (0 for an empty hypothesis)."""


def _label(cut_id: str, hyp, tokenizer) -> PseudoLabel:
    tokens = [int(t) for t in hyp.tokens]
    confidences = [float(c) for c in hyp.token_confidences]
    if len(confidences) != len(tokens):
        raise ValueError(
            f"cut {cut_id}: the model's hypothesis has {len(tokens)} tokens but "
            f"{len(confidences)} token confidences; pseudo-labelling needs one per token")
    if not tokens:
        return PseudoLabel(cut_id, "", [], 0.0, 0.0, 0)
    return PseudoLabel(cut_id, tokenizer.decode(tokens), tokens,
                       sum(confidences) / len(confidences), min(confidences), len(tokens))


@torch.no_grad()
def pseudo_label(
    model,
    cuts,
    tokenizer,
    *,
    language: str | None = None,
    method: str = "greedy",
    beam: int = 4,
    device: str | torch.device = "cpu",
    max_duration: float = 200.0,
    search_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> list[PseudoLabel]:
    """Transcribe ``cuts`` with a teacher model and score each transcript's confidence.

    The model runs in eval mode without gradients (its training mode is restored after)
    over batches of cuts sorted by duration (longest first, at most ``max_duration``
    seconds of audio each), with features computed as :func:`~speechfm.decode.asr.
    decode_manifest` computes them (the model's own fbank configuration).

    Args:
        model: an ASR model with ``recognize(feats, x_lens, method=, beam=, **kwargs)``
            returning hypotheses with ``tokens`` and per-token ``token_confidences``
            (speechfm CTC and transducer models), and ``encoder.fbank.config``.
        cuts: a lhotse CutSet (or iterable of cuts) with recordings or features; their
            supervisions' text, if any, is ignored.
        tokenizer: the model's tokenizer (``decode`` turns tokens into the label text).
        language: language key passed to the encoder as ``language=`` for every cut
            (selects language-keyed adapters); None passes none.
        method: "greedy" or "beam" (the model's beam search, no LM).
        beam: beam width for "beam".
        device: where the features go; the model must be on this device already.
        max_duration: seconds of audio per batch.
        search_kwargs: more keyword arguments of ``model.recognize`` (e.g. ``final_pass``,
            ``chunk_size``, ``max_sym_per_frame`` for transducers).
        progress: show a tqdm progress bar (cuts done).

    Returns:
        One label per cut, in the order of ``cuts``. A cut whose audio or features cannot be
        read is left out (with a logged warning), so the list can be shorter than ``cuts``;
        match labels to cuts by ``cut_id``.

    Raises:
        ValueError: a bad ``method``, ``beam``, ``max_duration``, a ``search_kwargs`` key
            that this function sets itself, or a hypothesis without one confidence per token.
        DataError: a cut id occurs twice in ``cuts`` (the id is named).
    """
    from lhotse import CutSet

    from speechfm.data.dataset import iterate_batches

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if max_duration <= 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")
    search = dict(search_kwargs or {})
    clash = sorted(set(search) & {"method", "beam", "language"})
    if clash:
        raise ValueError(f"search_kwargs must not set {clash}: pass them as arguments")
    if language is not None:
        search["language"] = language

    cut_list = list(cuts)
    order: dict[str, int] = {}
    for i, cut in enumerate(cut_list):
        if cut.id in order:
            raise DataError(f"cut {cut.id}: the id occurs more than once in the cuts")
        order[cut.id] = i
    labels: dict[str, PseudoLabel] = {}
    skipped: list[str] = []
    if not cut_list:
        return []
    by_duration = CutSet.from_cuts(sorted(cut_list, key=lambda c: (-c.duration, order[c.id])))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cut_list), desc="pseudo-label", unit="cut")
    was_training = model.training
    model.eval()
    try:
        for batch in iterate_batches(by_duration, model.encoder.fbank.config,
                                     max_duration=max_duration):
            skipped.extend(batch["skipped_cut_ids"])
            if batch["cut_ids"]:
                feats, x_lens = batch["features"].to(device), batch["x_lens"].to(device)
                hyps = model.recognize(feats, x_lens, method=method, beam=beam, **search)
                for cut_id, hyp in zip(batch["cut_ids"], hyps, strict=True):
                    labels[cut_id] = _label(cut_id, hyp, tokenizer)
            if bar is not None:
                bar.update(len(batch["cut_ids"]) + len(batch["skipped_cut_ids"]))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if skipped:
        log.warning("pseudo_label: %d cuts could not be read and have no label, e.g. %s",
                    len(skipped), skipped[:10])
    return sorted(labels.values(), key=lambda lab: order[lab.cut_id])


def _usable_tokens(label: PseudoLabel) -> int:
    # Tokens that decode to nothing (e.g. only word separators) make no transcript.
    return label.num_tokens if label.text.strip() else 0


def filter_pseudo_labels(
    labels: Iterable[PseudoLabel],
    *,
    min_confidence: float = 0.0,
    min_tokens: int = 1,
    top_fraction: float | None = None,
) -> list[PseudoLabel]:
    """The labels confident and long enough to train on.

    First keeps the labels with ``confidence >= min_confidence`` and
    ``num_tokens >= min_tokens`` (a label whose text is empty, e.g. a hypothesis of word
    separators only, counts as having no tokens); then, with ``top_fraction``, only the
    ``ceil(top_fraction * kept)`` most confident of those (equal confidences ordered by
    cut id, so the choice does not depend on the input order).

    Args:
        labels: pseudo-labels, e.g. from :func:`pseudo_label`.
        min_confidence: lowest mean token confidence kept, in [0, 1].
        min_tokens: fewest tokens kept (>= 0; the default 1 drops empty labels).
        top_fraction: in (0, 1]: keep this fraction of the labels that pass the
            thresholds, the most confident first; None keeps them all.

    Returns:
        The kept labels in their input order.

    Raises:
        ValueError: an argument outside its range.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
        raise ValueError(f"min_tokens must be an integer >= 0, got {min_tokens!r}")
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1] or None, got {top_fraction}")
    kept = [lab for lab in labels
            if lab.confidence >= min_confidence and _usable_tokens(lab) >= min_tokens]
    if top_fraction is None or not kept:
        return kept
    count = math.ceil(top_fraction * len(kept))
    best = sorted(kept, key=lambda lab: (-lab.confidence, lab.cut_id))[:count]
    chosen = {id(lab) for lab in best}
    return [lab for lab in kept if id(lab) in chosen]


def pseudo_label_cuts(cuts, labels: Iterable[PseudoLabel]):
    """The labelled cuts as a CutSet to train a student on.

    Each label's cut gets its supervision ``text`` replaced by the label's text and
    ``custom["pseudo_label"] = True``, ``custom["confidence"]`` (the label's mean token
    confidence) added; everything else (language, speaker, timing, other ``custom`` keys,
    recording, features) is kept. A cut without supervision gets one spanning the whole
    cut (with no language or speaker).

    Args:
        cuts: a lhotse CutSet (or iterable of cuts) holding every label's cut.
        labels: pseudo-labels, e.g. from :func:`filter_pseudo_labels`.

    Returns:
        A CutSet of the labels' cuts, in the order of ``labels``.

    Raises:
        DataError: a label whose cut is not in ``cuts``, two labels for one cut, or a cut
            with more than one supervision (the pseudo-label covers the whole cut); the
            message names the cut.
    """
    from lhotse import CutSet, SupervisionSegment
    from lhotse.utils import fastcopy

    by_id = {c.id: c for c in cuts}
    out = []
    seen: set[str] = set()
    for lab in labels:
        cut = by_id.get(lab.cut_id)
        if cut is None:
            raise DataError(f"pseudo-label for cut {lab.cut_id}: no such cut in the cuts")
        if lab.cut_id in seen:
            raise DataError(f"cut {lab.cut_id}: more than one pseudo-label")
        seen.add(lab.cut_id)
        custom = {"pseudo_label": True, "confidence": float(lab.confidence)}
        if len(cut.supervisions) > 1:
            raise DataError(f"cut {cut.id}: has {len(cut.supervisions)} supervisions; a "
                            "pseudo-label transcribes the whole cut and needs at most one")
        if cut.supervisions:
            sup = cut.supervisions[0]
            sup = fastcopy(sup, text=lab.text, custom={**(sup.custom or {}), **custom})
        else:
            sup = SupervisionSegment(id=cut.id, recording_id=cut.recording_id, start=0.0,
                                     duration=cut.duration, channel=cut.channel,
                                     text=lab.text, custom=custom)
        out.append(fastcopy(cut, supervisions=[sup]))
    return CutSet.from_cuts(out)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def pseudo_label_stats(
    labels: Sequence[PseudoLabel],
    kept: Sequence[PseudoLabel],
    references: Mapping[str, str] | None = None,
    *,
    normalize: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Summary of a pseudo-labelling round: how much was kept, and how good it is.

    Args:
        labels: all pseudo-labels (from :func:`pseudo_label`).
        kept: the ones kept (from :func:`filter_pseudo_labels`), a subset of ``labels``.
        references: cut id -> true transcript, for the cuts whose truth is known (e.g. a
            labelled dev slice run through the same teacher); labels of other cuts are not
            scored.
        normalize: applied to each reference before scoring (e.g. the tokenizer's
            ``normalize``, so references match the decoded, normalised label text); None
            scores references as given.

    Returns:
        ``num_labels``, ``num_kept``, ``num_empty`` (labels with empty text),
        ``kept_fraction`` (of ``labels``), ``mean_confidence`` (over all labels) and
        ``kept_mean_confidence``; NaN for a mean or fraction over nothing. With
        ``references`` also ``num_scored`` and ``num_kept_scored`` (labels with a
        reference), ``cer`` / ``wer`` of the kept labels and ``all_cer`` / ``all_wer`` of
        all labels (fractions from :func:`speechfm.decode.scoring.score`: character and
        word errors over reference length; NaN with nothing to score).

    Raises:
        ValueError: a kept label's cut has no label in ``labels``.
    """
    from speechfm.decode.scoring import score

    labels, kept = list(labels), list(kept)
    ids = {lab.cut_id for lab in labels}
    strays = sorted({lab.cut_id for lab in kept} - ids)
    if strays:
        raise ValueError(f"{len(strays)} kept labels are not among the labels, "
                         f"e.g. {strays[:5]}")
    stats: dict[str, Any] = {
        "num_labels": len(labels),
        "num_kept": len(kept),
        "num_empty": sum(1 for lab in labels if _usable_tokens(lab) == 0),
        "kept_fraction": len(kept) / len(labels) if labels else math.nan,
        "mean_confidence": _mean([lab.confidence for lab in labels]),
        "kept_mean_confidence": _mean([lab.confidence for lab in kept]),
    }
    if references is None:
        return stats

    def rates(subset: list[PseudoLabel]) -> tuple[int, float, float]:
        scored = [lab for lab in subset if lab.cut_id in references]
        if not scored:
            return 0, math.nan, math.nan
        refs = {lab.cut_id: references[lab.cut_id] for lab in scored}
        if normalize is not None:
            refs = {k: normalize(v) for k, v in refs.items()}
        hyps = {lab.cut_id: lab.text for lab in scored}
        return (len(scored), score(refs, hyps, unit="char").rate,
                score(refs, hyps, unit="word").rate)

    stats["num_kept_scored"], stats["cer"], stats["wer"] = rates(kept)
    stats["num_scored"], stats["all_cer"], stats["all_wer"] = rates(labels)
    return stats
