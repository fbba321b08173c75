"""Adapters stored apart from their base model: one file per adapter (per language), added
to, removed from or swapped in a loaded model without touching the base weights.

An adapter file is ``<stem>.safetensors`` (the adapter's tensors, keyed as in the model's
state dict) with its metadata in the safetensors header and beside it as ``<stem>.json``::

    {"format": "speechfm-adapter", "version": 1, "name": "lda", "language": "ky",
     "base_hash": "<sha256 of the base model's weights>", "num_params": 77184,
     "spec": {"kind": "bottleneck", "options": {"bottleneck": 32},
              "points": ["after_block"], "layers": null},
     "hosts": ["encoder.conformer"], ...anything the recipe adds (dev WER, step)}

``base_hash`` (:func:`base_model_hash`) covers every tensor of the model that belongs to no
adapter (names, dtypes, shapes and bytes), so an adapter trained on one foundation model is
refused by any other (:func:`attach_adapter` raises a :class:`DataError` naming both).
``hosts`` are the module paths of the :class:`~speechfm.nn.adapters.AdapterHost` encoders
the adapter lives in (a cascaded encoder has two); ``spec`` rebuilds its modules with
:func:`~speechfm.nn.adapters.adapter_factory`.  Nothing is unpickled.

A model directory can carry adapter files as its ``adapters/`` part (one multi-language
model artifact: the base weights plus each language's adapter); ``speechfm.load(dir,
adapters=[file, ...])`` attaches more.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.errors import DataError

__all__ = [
    "ADAPTER_FORMAT",
    "AdapterFile",
    "adapter_hosts",
    "attach_adapter",
    "base_model_hash",
    "detach_adapter",
    "export_adapter",
    "read_adapter",
    "save_adapter",
]

ADAPTER_FORMAT = "speechfm-adapter"
ADAPTER_VERSION = 1
_HEADER_KEY = "speechfm_adapter"


@dataclass
class AdapterFile:
    """One stored adapter: its metadata (see the module doc) and tensors."""

    meta: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def language(self) -> str | None:
        lang = self.meta.get("language")
        return None if lang is None else str(lang)

    @property
    def key(self) -> str:
        """``name@language`` (or ``name``): how the model's slots hold it."""
        return self.name if self.language is None else f"{self.name}@{self.language}"


def base_model_hash(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a model's base weights: every state-dict entry that belongs to no
    adapter, in name order, with its dtype and shape.  Adding, removing or training
    adapters leaves it unchanged; any change to the base weights changes it."""
    from speechfm.nn.adapters import adapter_of_key

    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for key in sorted(k for k in state if adapter_of_key(k) is None):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def adapter_hosts(model: nn.Module, name: str, language: str | None = None) -> list[str]:
    """Module paths of the adapter hosts (encoders) holding adapter ``name[@language]``."""
    from speechfm.nn.adapters import AdapterHost

    out = []
    for path, sub in model.named_modules():
        if isinstance(sub, AdapterHost) and any(
                (name, language) in block.adapters.keys() for block in sub.blocks):
            out.append(path)
    return out


def _own_state(model: nn.Module, name: str, language: str | None) -> dict[str, torch.Tensor]:
    """The state-dict entries of exactly adapter ``name[@language]`` (``language`` None: the
    language-independent one, not every language's)."""
    from speechfm.nn.adapters import adapter_of_key

    return {k: v for k, v in model.state_dict().items() if adapter_of_key(k) == (name, language)}


def export_adapter(model: nn.Module, name: str, language: str | None = None, *,
                   spec: Mapping[str, Any], base_hash: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> AdapterFile:
    """Take adapter ``name[@language]`` out of ``model`` as an :class:`AdapterFile`.

    Args:
        model: the model holding it (its base weights are hashed unless ``base_hash``).
        name, language: which adapter.
        spec: how to rebuild it: ``{"kind", "options", "points", "layers"}`` (the
            arguments it was added with; see :func:`~speechfm.nn.adapters.adapter_factory`).
        base_hash: the base model's :func:`base_model_hash`, if already known.
        extra: more metadata (e.g. ``{"dev": {"wer": 31.2, "step": 400}}``).

    Raises:
        ValueError: no such adapter, or ``spec`` lacks kind/points.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in _own_state(model, name, language).items()}
    if not state:
        what = name if language is None else f"{name}@{language}"
        raise ValueError(f"the model has no adapter {what!r}")
    missing = [k for k in ("kind", "points") if k not in spec]
    if missing:
        raise ValueError(f"adapter spec lacks {missing}")
    meta = {
        "format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "name": name,
        "language": language,
        "base_hash": base_hash or base_model_hash(model),
        "num_params": int(sum(v.numel() for v in state.values())),
        "spec": {"kind": spec["kind"], "options": dict(spec.get("options") or {}),
                 "points": list(spec["points"]), "layers": spec.get("layers")},
        "hosts": adapter_hosts(model, name, language),
        **dict(extra or {}),
    }
    return AdapterFile(meta, state)


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def save_adapter(adapter: AdapterFile, path: str | os.PathLike) -> Path:
    """Write ``<path>.safetensors`` (metadata in its header) and ``<path>.json``; returns
    the .safetensors path (``path`` may carry either suffix or none)."""
    from safetensors.torch import save_file

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(adapter.meta, ensure_ascii=False, sort_keys=True)
    out = stem.with_suffix(".safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state.items()}, str(out),
              metadata={_HEADER_KEY: text})
    stem.with_suffix(".json").write_text(
        json.dumps(adapter.meta, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        encoding="utf-8")
    return out


def read_adapter(path: str | os.PathLike) -> AdapterFile:
    """Read an adapter file (``x``, ``x.safetensors`` or ``x.json`` name the same one).

    Raises:
        DataError: no such file, not a speechfm adapter, or a newer format version.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = _stem(path).with_suffix(".safetensors")
    if not file.is_file():
        raise DataError(f"{file}: no such adapter file")
    try:
        with safe_open(str(file), framework="pt") as f:
            header = (f.metadata() or {}).get(_HEADER_KEY)
        state = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"{file}: cannot read the adapter ({e})") from e
    if header is None:
        raise DataError(f"{file}: not a speechfm adapter file (no {_HEADER_KEY} metadata)")
    meta = json.loads(header)
    if meta.get("format") != ADAPTER_FORMAT:
        raise DataError(f"{file}: format {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    if int(meta.get("version", 0)) > ADAPTER_VERSION:
        raise DataError(f"{file}: adapter format version {meta['version']} is newer than this "
                        f"speechfm reads ({ADAPTER_VERSION})")
    return AdapterFile(meta, state)


def attach_adapter(model: nn.Module, adapter: AdapterFile | str | os.PathLike, *,
                   base_hash: str | None = None) -> AdapterFile:
    """Add a stored adapter to ``model`` (built from its spec in each of its hosts, its
    tensors loaded); the base weights are not touched.

    Args:
        model: the base model (with or without other adapters).
        adapter: an :class:`AdapterFile` or a path to one.
        base_hash: ``base_model_hash(model)`` when the caller has it (saves rehashing when
            attaching several).

    Raises:
        DataError: the adapter was made for another base model (both hashes named), its
            host is missing, the same adapter is already attached, or its tensors do not
            match what its spec builds.
    """
    from speechfm.nn.adapters import adapter_factory

    where = adapter if not isinstance(adapter, AdapterFile) else f"adapter {adapter.key!r}"
    if not isinstance(adapter, AdapterFile):
        adapter = read_adapter(adapter)
    meta = adapter.meta
    ours = base_hash or base_model_hash(model)
    if meta.get("base_hash") != ours:
        raise DataError(
            f"{where}: adapter {adapter.key!r} was made for another base model (base hash "
            f"{str(meta.get('base_hash'))[:12]}...; this model's is {ours[:12]}...): "
            "adapters only work on the exact foundation model they were trained on")
    spec = meta.get("spec") or {}
    hosts = list(meta.get("hosts") or [])
    if not hosts:
        raise DataError(f"{where}: the adapter names no host module")
    lang = adapter.language
    added = []
    try:
        for host in hosts:
            try:
                sub = model.get_submodule(host)
            except AttributeError as e:
                raise DataError(f"{where}: the model has no module {host!r} to host it") from e
            try:
                sub.add_adapter(adapter.name, adapter_factory(spec["kind"], **spec.get("options", {})),
                                points=spec["points"], layers=spec.get("layers"),
                                languages=None if lang is None else [lang])
            except ValueError as e:
                raise DataError(f"{where}: cannot add adapter {adapter.key!r}: {e}") from e
            added.append(sub)
        built = _own_state(model, adapter.name, lang)
        if set(built) != set(adapter.state) or any(
                built[k].shape != adapter.state[k].shape for k in built):
            raise DataError(f"{where}: its tensors do not match what its spec builds "
                            f"({len(adapter.state)} stored, {len(built)} built)")
        with torch.no_grad():
            for k, v in built.items():
                v.copy_(adapter.state[k].to(v.dtype))
    except Exception:
        for sub in added:
            sub.remove_adapter(adapter.name, lang)
        raise
    return adapter


def detach_adapter(model: nn.Module, name: str, language: str | None = None) -> int:
    """Remove adapter ``name`` (only ``language``'s, if given) from every host; returns how
    many modules went (0: it was not there)."""
    from speechfm.nn.adapters import AdapterHost

    return sum(sub.remove_adapter(name, language) for sub in model.modules()
               if isinstance(sub, AdapterHost))
