"""Evaluation of audio classifiers (keyword spotting, digits, speaker identification).

A classifier is any model with ``classify(feats, x_lens) -> (N, K) logits`` (the ``ast``
family); the reference label of a cut is its supervision text (``label_field="text"``) or
its speaker (``"speaker"``).  :func:`evaluate_classifier` gives accuracy, macro accuracy
(mean per-class recall) and per-class figures; :func:`classify_manifest` also writes one
line per cut (``id  reference  prediction  score``) and the confusion matrix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from speechfm.data.subsets import LABEL_FIELDS, cut_label
from speechfm.errors import DataError

__all__ = ["LABEL_FIELDS", "classify_manifest", "cut_label", "evaluate_classifier",
           "label_ids"]

def label_ids(values: Sequence[str], labels: Sequence[str], cut_ids: Sequence[str]) -> list[int]:
    """Class ids of ``values``; an unknown label is an error naming its cut."""
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for value, cut_id in zip(values, cut_ids, strict=True):
        if value not in index:
            raise DataError(f"cut {cut_id}: label {value!r} is not one of the model's "
                            f"{len(labels)} classes")
        out.append(index[value])
    return out


@torch.no_grad()
def _predict(model, cuts, *, device, max_duration: float, world_size: int = 1, rank: int = 0,
             adapters=None):
    from speechfm.data.dataset import iterate_batches

    ids, probs = [], []
    for batch in iterate_batches(cuts, model.encoder.fbank.config, max_duration=max_duration,
                                 world_size=world_size, rank=rank):
        if not batch["cut_ids"]:
            continue
        kwargs = {} if adapters is None else {"adapters": adapters}
        logits = model.classify(batch["features"].to(device), batch["x_lens"].to(device), **kwargs)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        ids.extend(batch["cut_ids"])
    return ids, (torch.cat(probs) if probs else torch.zeros(0, 0))


def evaluate_classifier(model, cuts, labels: Sequence[str], *, label_field: str = "text",
                        device: torch.device | str = "cpu", max_duration: float = 200.0,
                        world_size: int = 1, rank: int = 0) -> dict[str, float]:
    """Accuracy of ``model`` on ``cuts`` (eval mode is the caller's business).

    Returns ``{"accuracy", "macro_accuracy", "loss", "num_utts"}`` (accuracies in %; loss =
    mean cross-entropy in nats).  With ``world_size > 1`` the counts are all-reduced.
    """
    by_id = {c.id: cut_label(c, label_field) for c in cuts}
    ids, probs = _predict(model, cuts, device=device, max_duration=max_duration,
                          world_size=world_size, rank=rank)
    k = len(labels)
    stats = torch.zeros(2 * k + 2, dtype=torch.float64)  # per-class total, right; nll; n
    if ids:
        refs = torch.tensor(label_ids([by_id[i] for i in ids], labels, ids))
        pred = probs.argmax(-1)
        stats[:k] += torch.bincount(refs, minlength=k).double()
        stats[k:2 * k] += torch.bincount(refs[pred == refs], minlength=k).double()
        stats[2 * k] = -torch.log(probs[torch.arange(len(ids)), refs].clamp_min(1e-12)).sum()
        stats[2 * k + 1] = len(ids)
    if world_size > 1:
        import torch.distributed as dist

        stats = stats.to(device)
        dist.all_reduce(stats)
        stats = stats.cpu()
    total, right = stats[:k], stats[k:2 * k]
    n = float(stats[2 * k + 1])
    present = total > 0
    return {
        "accuracy": 100.0 * float(right.sum()) / max(n, 1.0),
        "macro_accuracy": 100.0 * float((right[present] / total[present]).mean())
        if bool(present.any()) else 0.0,
        "loss": float(stats[2 * k]) / max(n, 1.0),
        "num_utts": n,
    }


def classify_manifest(model, cuts, labels: Sequence[str], out_dir: str | Path, *,
                      label_field: str = "text", device: torch.device | str = "cpu",
                      max_duration: float = 200.0, adapters=None) -> dict[str, Any]:
    """Classify every cut, write ``predictions.tsv``, ``confusion.tsv`` and
    ``results.json`` under ``out_dir``; returns the results (accuracy, macro accuracy,
    per-class accuracy, counts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cuts = cuts.to_eager() if hasattr(cuts, "to_eager") else cuts
    by_id = {c.id: cut_label(c, label_field) for c in cuts}
    ids, probs = _predict(model, cuts, device=device, max_duration=max_duration,
                          adapters=adapters)
    k = len(labels)
    refs = label_ids([by_id[i] for i in ids], labels, ids)
    confusion = [[0] * k for _ in range(k)]
    lines = ["id\treference\tprediction\tscore"]
    right = 0
    for i, cut_id in enumerate(ids):
        p = int(probs[i].argmax())
        confusion[refs[i]][p] += 1
        right += int(p == refs[i])
        lines.append(f"{cut_id}\t{labels[refs[i]]}\t{labels[p]}\t{float(probs[i, p]):.4f}")
    (out / "predictions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["reference\\prediction\t" + "\t".join(labels)]
    rows += [labels[r] + "\t" + "\t".join(str(v) for v in confusion[r]) for r in range(k)]
    (out / "confusion.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    per_class = {labels[r]: 100.0 * confusion[r][r] / sum(confusion[r])
                 for r in range(k) if sum(confusion[r])}
    results = {
        "accuracy": 100.0 * right / max(len(ids), 1),
        "macro_accuracy": sum(per_class.values()) / max(len(per_class), 1),
        "num_utts": len(ids),
        "num_correct": right,
        "per_class_accuracy": per_class,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
