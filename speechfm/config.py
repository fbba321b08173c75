"""Typed configuration for every recipe: YAML files, ``key=value`` overrides, dataclasses.

A recipe's configuration is a ``@dataclass(kw_only=True)`` (one docstring per field and a
``validate()``), usually a subclass of :class:`speechfm.train.runner.RunConfig` adding the
recipe's own fields. This module turns YAML and command-line overrides into such a
dataclass and back:

- :func:`load_config` reads YAML, applies ``key=value`` overrides on dotted paths
  (``optimizer.lr=2e-3``, ``model.encoder.conformer.num_layers=8``) and validates;
- values are parsed as YAML and converted to the annotated field type (so ``1e-3``, which
  YAML 1.1 reads as a string, still becomes a float; a list becomes a tuple where the
  field is a tuple; a mapping becomes a nested dataclass);
- unknown keys, missing required keys and unconvertible values are errors naming their
  dotted path;
- :func:`config_to_dict` is the inverse (plain JSON/YAML data);
- :func:`override_dataclass` applies a nested mapping of overrides to an existing
  dataclass instance (how a named model size is adjusted field by field).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from speechfm.errors import DataError

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "override_dataclass",
    "named_config",
    "parse_recipe_args",
    "split_overrides",
]

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to type ``tp`` (as annotated on a dataclass field).

    Raises:
        ValueError: the value cannot be converted; the message starts with ``where``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ValueError(f"{where}: null is not allowed")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    if value is None:
        raise ValueError(f"{where}: null is not allowed (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return config_from_dict(tp, value, where=where)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {list(value)}")
            items = [coerce(v, a, f"{where}[{i}]")
                     for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            inner = args[0] if args else Any
            items = [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # also "1e-3", which YAML 1.1 reads as a string
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) mapping, converting values to the field types.

    Raises:
        ValueError: an unknown key, a missing required field or an unconvertible value,
            named by its dotted path.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown {cls.__name__} keys: {[prefix + k for k in unknown]} "
            f"(known: {sorted(names)})"
        )
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        kwargs[key] = coerce(value, hints[key], path)
    missing = [
        n for n, f in names.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{cls.__name__}: required keys missing: {missing}")
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain nested data (tuples as lists): what YAML/JSON can hold."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif dataclasses.is_dataclass(child):
            child = node[key] = dataclasses.asdict(child)
        elif not isinstance(child, dict):
            raise ValueError(f"override {path}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a copy of a nested dict (values parsed as YAML).

    Raises:
        ValueError: an override without ``=`` or through a non-section.
    """
    out = json.loads(json.dumps(dict(data)))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value")
        _set_path(out, key.strip(), _parse_value(text))
    return out


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split command-line words into (``key=value`` overrides, everything else)."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return overrides, [a for a in args if a not in overrides]


def read_yaml(path: str | os.PathLike | None) -> dict[str, Any]:
    """A YAML mapping from ``path`` ({} for None or an empty file).

    Raises:
        DataError: the file cannot be read or is not a mapping.
    """
    import yaml

    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read the config: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: the config must be a YAML mapping")
    return loaded


def load_config(
    cls: type[C],
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    **replace: Any,
) -> C:
    """Read a ``cls`` config from YAML, apply ``key=value`` overrides, validate.

    Args:
        cls: the config dataclass.
        path: YAML file (a mapping of the config's fields); None starts from no keys.
        overrides: dotted ``key=value`` strings applied after the file.
        replace: top-level keys set last when not None (e.g. ``exp_dir=args.exp_dir``).

    Raises:
        DataError: the file cannot be read or is not a mapping.
        ValueError: unknown keys, bad values or an inconsistent configuration.
    """
    data = apply_overrides(read_yaml(path), overrides)
    data.update({k: v for k, v in replace.items() if v is not None})
    config = config_from_dict(cls, data)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def override_dataclass(obj: C, overrides: Mapping[str, Any], where: str = "") -> C:
    """A copy of dataclass ``obj`` with a nested mapping of field overrides applied.

    Nested dataclass fields take nested mappings (only the keys given change); other
    values are converted to the field's type.

    Raises:
        ValueError: an unknown key or an unconvertible value, named by its dotted path.
    """
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ValueError(f"unknown key {path} (known: {sorted(names)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = override_dataclass(current, value, path)
        else:
            changes[key] = coerce(value, hints[key], path)
    return dataclasses.replace(obj, **changes)


def parse_recipe_args(argv: Sequence[str] | None, config_class: type[C], description: str | None,
                      *, extra: Callable[[Any], None] | None = None) -> tuple[C, Any]:
    """A recipe's command line: ``CONFIG.yaml [--exp-dir DIR] [--resume] [--print-config]
    [key=value ...]`` -> (validated config, parsed args).

    Args:
        argv: the words (None = ``sys.argv[1:]``).
        config_class: the recipe's config dataclass.
        description: the ``--help`` text (the recipe's docstring).
        extra: ``f(parser)`` adding the recipe's own options; an option whose ``dest``
            starts with ``override_`` may append overrides in ``args.overrides``.

    Exits (argparse) with a message naming the file for an unreadable or invalid config.
    """
    import argparse

    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help=f"YAML config ({config_class.__name__} fields)")
    p.add_argument("--exp-dir", default=None, help="output directory (overrides exp_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint (fresh start if none)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if extra is not None:
        extra(p)
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o]
    if bad:
        p.error(f"not a key=value override: {' '.join(bad)}")
    args.overrides = overrides
    for hook in getattr(args, "override_hooks", []):
        hook(args)
    try:
        config = load_config(config_class, args.config, args.overrides, exp_dir=args.exp_dir)
    except ValueError as e:
        p.error(f"{args.config}: {e}")
    return config, args


def named_config(sizes: Mapping[str, Callable[[], C]], name: str, overrides: Mapping[str, Any],
                 *, where: str = "model", fixed: Mapping[str, str] | None = None,
                 replace: Mapping[str, Any] | None = None) -> C:
    """A named size's config with field overrides applied, validated: what a recipe's
    ``model_size`` + ``model:`` section mean.

    Args:
        sizes: name -> function returning the config (e.g. ``partial(ctc_tiny, vocab)``).
        name: the size asked for.
        overrides: nested field overrides (:func:`override_dataclass`).
        where: the section's name in error messages.
        fixed: fields the overrides may not set, with the reason
            (``{"vocab_size": "it comes from the tokenizer"}``).
        replace: whole fields set before the overrides (e.g. a pretrained encoder's config).

    Raises:
        ValueError: an unknown size, a fixed or unknown field, an invalid result.
    """
    if name not in sizes:
        raise ValueError(f"{where}_size must be one of {sorted(sizes)}, got {name!r}")
    for key, reason in (fixed or {}).items():
        if key in overrides:
            raise ValueError(f"{where}.{key} cannot be set: {reason}")
    config = sizes[name]()
    if replace:
        config = dataclasses.replace(config, **replace)
    config = override_dataclass(config, overrides, where)
    config.validate()
    return config
