"""A small spoken language-ID head on a frozen encoder, to pick language-dependent adapters.

A multi-adapter model (one adapter per tail language, ``recipes/lda``) needs the language
of its input. When the caller cannot give it, a :class:`LanguageIdHead` guesses it from the
base model's own encoder output: statistics pooling (mean and standard deviation over the
valid frames) then a two-layer MLP over the languages. It reads the *base* model (no
language adapter active), so it costs one extra encoder pass and adds no weights to the
encoder; the chosen language's adapters then run for the transcript.

Stored as one safetensors file (the head's tensors; its metadata in the header)::

    {"format": "speechfm-language-id", "version": 1, "languages": ["en", "ky", ...],
     "dim": 192, "hidden": 128, "base_hash": "<sha256 of the base weights>", ...}

``base_hash`` (:func:`~speechfm.models.adapter_store.base_model_hash`) ties the head to the
encoder it was trained on; a model directory carries it as its ``language_id/`` part.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.errors import DataError

__all__ = [
    "LID_FORMAT",
    "LanguageIdHead",
    "encoder_statistics",
    "identify",
    "load_language_id",
    "run_by_language",
    "save_language_id",
    "train_language_id",
]

LID_FORMAT = "speechfm-language-id"
LID_VERSION = 1
LID_FILE = "language_id.safetensors"
_HEADER_KEY = "speechfm_language_id"


def pool_statistics(enc: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """(N, 2C) mean and standard deviation over the valid frames of (N, T, C) ``enc``."""
    mask = (torch.arange(enc.shape[1], device=enc.device)[None, :] < lens[:, None]).to(enc.dtype)
    n = mask.sum(1, keepdim=True).clamp(min=1.0)
    mean = (enc * mask[..., None]).sum(1) / n
    var = (((enc - mean[:, None]) ** 2) * mask[..., None]).sum(1) / n
    return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)


class LanguageIdHead(nn.Module):
    """Pooled encoder statistics -> LayerNorm -> Linear -> ReLU -> Linear: language logits."""

    def __init__(self, dim: int, languages: Sequence[str], hidden: int = 128) -> None:
        super().__init__()
        languages = list(languages)
        if len(languages) < 2 or len(set(languages)) != len(languages):
            raise ValueError(f"languages must be two or more distinct codes, got {languages}")
        self.languages = languages
        self.dim, self.hidden = int(dim), int(hidden)
        self.norm = nn.LayerNorm(2 * self.dim)
        self.mlp = nn.Sequential(nn.Linear(2 * self.dim, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, len(languages)))

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, L) logits of (N, 2C) pooled statistics."""
        return self.mlp(self.norm(pooled))

    def forward(self, enc: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(N, L) logits of (N, T, C) encoder output with (N,) valid lengths."""
        return self.forward_pooled(pool_statistics(enc.float(), lens))


def encoder_statistics(model: nn.Module, feats: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
    """(N, 2C) pooled statistics of the base model's encoder output (no language adapter;
    a cascaded transducer's final pass) for (N, T, F) features."""
    with torch.no_grad():
        out = model.encode(feats, x_lens)
    enc, lens = out[0], out[1]
    return pool_statistics(enc.float(), lens)


def identify(model: nn.Module, head: LanguageIdHead, feats: torch.Tensor, x_lens: torch.Tensor
             ) -> tuple[list[str], torch.Tensor]:
    """The most likely language of each row and the (N, L) posteriors."""
    with torch.no_grad():
        probs = head.forward_pooled(encoder_statistics(model, feats, x_lens)).softmax(-1)
    return [head.languages[i] for i in probs.argmax(-1).tolist()], probs


def run_by_language(feats: torch.Tensor, x_lens: torch.Tensor, langs: Sequence[str],
                    fn: Callable[[torch.Tensor, torch.Tensor, str], list[Any]]) -> list[Any]:
    """Call ``fn(feats, x_lens, lang)`` once per language on that language's rows (padding
    trimmed to the sub-batch's longest row); the results are returned in row order."""
    out: list[Any] = [None] * len(langs)
    for lang in sorted(set(langs)):
        rows = [i for i, x in enumerate(langs) if x == lang]
        idx = torch.tensor(rows, device=feats.device)
        sub_lens = x_lens.index_select(0, idx)
        sub = feats.index_select(0, idx)[:, : int(sub_lens.max())]
        for i, result in zip(rows, fn(sub, sub_lens, lang), strict=True):
            out[i] = result
    return out


# ------------------------------------------------------------------------ storage


def save_language_id(head: LanguageIdHead, path: str | Path, *, base_hash: str,
                     extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``head`` as one safetensors file (metadata in its header); returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": LID_FORMAT, "version": LID_VERSION, "languages": head.languages,
            "dim": head.dim, "hidden": head.hidden, "base_hash": base_hash, **dict(extra or {})}
    state = {k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path), metadata={_HEADER_KEY: json.dumps(meta)})
    return path


def load_language_id(path: str | Path) -> tuple[LanguageIdHead, dict[str, Any]]:
    """Read a head written by :func:`save_language_id`; returns (head, metadata).

    Raises:
        DataError: not a speechfm language-ID file, or its tensors do not fit its metadata.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no language-ID file")
    with safe_open(str(path), framework="pt") as f:
        header = (f.metadata() or {}).get(_HEADER_KEY)
    if header is None:
        raise DataError(f"{path}: not a speechfm language-ID file (no {_HEADER_KEY} metadata)")
    meta = json.loads(header)
    if meta.get("format") != LID_FORMAT or meta.get("version") != LID_VERSION:
        raise DataError(f"{path}: unsupported language-ID format {meta.get('format')!r} "
                        f"version {meta.get('version')!r}")
    head = LanguageIdHead(meta["dim"], meta["languages"], meta["hidden"])
    try:
        head.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise DataError(f"{path}: tensors do not match the head its metadata describes: {e}") from e
    return head.eval(), meta


def check_base(meta: Mapping[str, Any], base_hash: str, where: Any) -> None:
    """Refuse a language-ID head trained on another base model."""
    if meta.get("base_hash") != base_hash:
        raise DataError(f"{where}: the language-ID head was trained on another base model "
                        f"(base {str(meta.get('base_hash'))[:12]}..., this model "
                        f"{base_hash[:12]}...)")


def load_directory_head(directory: str | Path, meta: Mapping[str, Any] | None,
                        base_hash: str) -> LanguageIdHead | None:
    """A model directory's ``language_id`` part (None if it has none), refused when it was
    trained on another base model than the one ``base_hash`` describes."""
    from speechfm.models.io import load_part

    found = load_part(directory, "language_id", meta)
    if found is None:
        return None
    head, lid_meta = found
    check_base(lid_meta, base_hash, directory)
    return head


# ------------------------------------------------------------------------ training


def train_language_id(
    pooled: Mapping[str, torch.Tensor],
    *,
    hidden: int = 128,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    dev: Mapping[str, torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[LanguageIdHead, dict[str, float]]:
    """Train a head on pooled encoder statistics, language-balanced.

    Args:
        pooled: per language, its (N_l, 2C) pooled statistics (:func:`encoder_statistics`).
            Batches draw languages uniformly, so a tail language with few utterances counts
            as much as a head language.
        dev: per language, held-out statistics: the head of the best dev accuracy (checked
            every 100 steps) is returned; without it, the last.

    Returns:
        The head (eval mode) and ``{"dev_accuracy": ..., "step": ...}`` of the one returned.
    """
    languages = sorted(pooled)
    if any(pooled[lang].ndim != 2 or not len(pooled[lang]) for lang in languages):
        raise ValueError("pooled must map each language to a non-empty (N, 2C) tensor")
    dim = pooled[languages[0]].shape[1] // 2
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = LanguageIdHead(dim, languages, hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for step in range(1, steps + 1):
        head.train()
        labels = torch.tensor([rng.randrange(len(languages)) for _ in range(batch_size)])
        rows = [pooled[languages[k]][torch.randint(len(pooled[languages[k]]), (1,), generator=gen)]
                for k in labels.tolist()]
        loss = nn.functional.cross_entropy(head.forward_pooled(torch.cat(rows)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev is not None and (step % 100 == 0 or step == steps):
            acc = language_id_accuracy(head, dev)["accuracy"]
            if best is None or acc > best[0]:
                best = (acc, step, {k: v.clone() for k, v in head.state_dict().items()})
            if log is not None:
                log(f"step {step}: loss {loss.item():.3f}, dev accuracy {acc:.3f}")
    info = {"dev_accuracy": math.nan, "step": float(steps)}
    if best is not None:
        head.load_state_dict(best[2])
        info = {"dev_accuracy": best[0], "step": float(best[1])}
    return head.eval(), info


def language_id_accuracy(head: LanguageIdHead, pooled: Mapping[str, torch.Tensor]
                         ) -> dict[str, float]:
    """Accuracy over all rows (``"accuracy"``) and per language (``"acc_<lang>"``,
    ``"n_<lang>"``); a language the head does not know counts as all wrong."""
    head.eval()
    out: dict[str, float] = {}
    right = total = 0
    with torch.no_grad():
        for lang, x in sorted(pooled.items()):
            pred = head.forward_pooled(x).argmax(-1).tolist()
            ok = sum(head.languages[p] == lang for p in pred)
            out[f"acc_{lang}"], out[f"n_{lang}"] = ok / max(len(pred), 1), float(len(pred))
            right, total = right + ok, total + len(pred)
    out["accuracy"] = right / max(total, 1)
    return out


def pooled_by_language(model: nn.Module, batches: Iterable[Mapping[str, Any]], *,
                       device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Pooled statistics of every cut in ``batches`` (:func:`~speechfm.data.dataset.
    iterate_batches` dicts with ``"langs"``), grouped by the supervision's language."""
    groups: dict[str, list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if not batch["cut_ids"]:
                continue
            stats = encoder_statistics(model, batch["features"].to(device),
                                       batch["x_lens"].to(device)).cpu()
            for i, lang in enumerate(batch.get("langs") or []):
                if lang is None:
                    raise DataError(f"cut {batch['cut_ids'][i]}: no language in its supervision")
                groups.setdefault(lang, []).append(stats[i : i + 1])
    finally:
        model.train(was_training)
    return {lang: torch.cat(rows) for lang, rows in groups.items()}
