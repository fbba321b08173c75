"""Parameter-efficient adapters and the named insertion points that host them.

A layer that supports adapters owns an :class:`AdapterSlots`: a set of named *points*, each
holding any number of adapters keyed by name and, optionally, by language.  The layer calls
the slots at fixed places of its forward; adding, removing or switching adapters never edits
layer code.  Three kinds of point exist:

- residual points (``after_ffn1``, ``after_attn``, ``after_conv``, ``after_ffn2``,
  ``after_ffn``, ``after_block``): an adapter maps a sub-module's output ``h`` (N, T, C) to
  a correction, and the layer continues with ``h + adapter(h)`` (sequential adapters:
  Houlsby et al. at ``after_attn`` + ``after_ffn``, Pfeiffer et al. at ``after_ffn``);
- input points (``parallel``, ``parallel_attn``, ``parallel_ffn``, ``attn_q``, ``attn_k``,
  ``attn_v``, ``attn_out``): the adapter reads the input of a sub-module (for the
  ``parallel*`` points the residual stream before the sub-module's norm) and its output is
  added to that sub-module's output (the parallel adapter of He et al.; LoRA on a linear
  layer);
- prompt points (``prompt``): the adapter returns learned frames (P, C) prepended to the
  sequence before the layer and dropped after it (deep prompt tuning);
- key/value prefix points (``prefix``): the adapter returns learned keys and values, each
  (P, C), that attention prepends to its projected keys and values (prefix tuning, Li and
  Liang): the sequence itself is unchanged, only what every query can attend to grows.

Which points a layer offers depends on the layer: the Conformer block has no
``after_ffn``/``parallel_attn``/``parallel_ffn`` (its macaron FFNs have their own points),
the plain transformer block (:mod:`speechfm.nn.transformer`) no ``after_ffn1``/
``after_conv``/``after_ffn2``.

An adapter factory is any callable ``factory(in_dim, out_dim) -> nn.Module``, e.g.
``functools.partial(BottleneckAdapter, bottleneck=64)`` or ``functools.partial(LoRA, rank=8)``.
Which adapters run is chosen per forward call by an :class:`AdapterContext`: all of them by
default, a subset by name, and language-keyed ones only for the batch's language.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "Adapter",
    "AdapterContext",
    "AdapterHost",
    "AdapterSlots",
    "BottleneckAdapter",
    "LoRA",
    "LoRALinear",
    "PrefixTuning",
    "PromptTuning",
    "ConvAdapter",
    "ADAPTER_KINDS",
    "adapter_factory",
    "adapter_keys",
    "adapter_of_key",
    "adapter_state_dict",
    "base_state_dict",
    "check_adapter_key",
    "check_adapter_specs",
    "count_parameters",
    "freeze_all_but",
    "freeze_all_but_adapters",
    "insert_adapters",
]

AdapterFactory = Callable[[int, int], nn.Module]

RESIDUAL_POINTS = ("after_ffn1", "after_attn", "after_conv", "after_ffn2", "after_ffn",
                   "after_block")
INPUT_POINTS = ("parallel", "parallel_attn", "parallel_ffn", "attn_q", "attn_k", "attn_v",
                "attn_out")
PREFIX_POINTS = ("prompt",)
KV_PREFIX_POINTS = ("prefix",)
ALL_POINTS = RESIDUAL_POINTS + INPUT_POINTS + PREFIX_POINTS + KV_PREFIX_POINTS
CONFORMER_POINTS = ("after_ffn1", "after_attn", "after_conv", "after_ffn2", "after_block",
                    "parallel", "attn_q", "attn_k", "attn_v", "attn_out", "prompt", "prefix")
"""The points of :class:`speechfm.nn.conformer.ConformerBlock`."""
TRANSFORMER_POINTS = ("after_attn", "after_ffn", "after_block", "parallel_attn",
                      "parallel_ffn", "attn_q", "attn_k", "attn_v", "attn_out", "prompt",
                      "prefix")
"""The points of :class:`speechfm.nn.transformer.TransformerBlock`."""

_LANG_SEP = "@"


class Adapter(nn.Module):
    """Marker base class: parameters of an Adapter stay trainable under
    :func:`freeze_all_but_adapters` wherever the module sits."""


@dataclass(frozen=True)
class AdapterContext:
    """Which adapters are active in one forward call.

    Attributes:
        names: adapter names to run; None = every name.
        language: the batch's language; adapters keyed by another language are skipped,
            and language-independent ones always run (subject to ``names``).
    """

    names: frozenset[str] | None = None
    language: str | None = None

    @staticmethod
    def make(names: Collection[str] | str | None, language: str | None) -> AdapterContext:
        if isinstance(names, str):
            names = (names,)
        return AdapterContext(None if names is None else frozenset(names), language)

    def selects(self, name: str, language: str | None) -> bool:
        if self.names is not None and name not in self.names:
            return False
        return language is None or language == self.language


_ALL = AdapterContext()


def check_adapter_key(kind: str, value: str) -> None:
    """Raise ValueError unless ``value`` can be an adapter name/language (state-dict safe)."""
    if not value or "." in value or _LANG_SEP in value:
        raise ValueError(f"adapter {kind} {value!r} must be non-empty without '.' or '@'")


class AdapterSlots(nn.Module):
    """Named insertion points of one layer, each holding adapters keyed ``name[@language]``.

    Args:
        points: the point names this layer offers (subset of the module-level points).
    """

    def __init__(self, points: Iterable[str]) -> None:
        super().__init__()
        self.points = tuple(points)
        self.slots = nn.ModuleDict()

    def add(self, point: str, name: str, module: nn.Module, language: str | None = None) -> None:
        """Insert ``module`` at ``point`` under ``name`` (and ``language``, if given)."""
        if point not in self.points:
            raise ValueError(f"unknown adapter point {point!r}; this layer offers {self.points}")
        check_adapter_key("name", name)
        if language is not None:
            check_adapter_key("language", language)
        key = name if language is None else f"{name}{_LANG_SEP}{language}"
        if point not in self.slots:
            self.slots[point] = nn.ModuleDict()
        if key in self.slots[point]:
            raise ValueError(f"adapter {key!r} already exists at point {point!r}")
        self.slots[point][key] = module

    def remove(self, name: str, language: str | None = None) -> int:
        """Remove the adapters called ``name``: every language's, or only ``language``'s;
        returns how many."""
        removed = 0
        for point in list(self.slots):
            for key in list(self.slots[point]):
                base, _, lang = key.partition(_LANG_SEP)
                if base == name and (language is None or lang == language):
                    del self.slots[point][key]
                    removed += 1
            if len(self.slots[point]) == 0:
                del self.slots[point]
        return removed

    def names(self) -> set[str]:
        return {key.split(_LANG_SEP, 1)[0] for point in self.slots for key in self.slots[point]}

    def keys(self) -> set[tuple[str, str | None]]:
        """(name, language or None) of every adapter held."""
        out = set()
        for point in self.slots:
            for key in self.slots[point]:
                name, _, lang = key.partition(_LANG_SEP)
                out.add((name, lang or None))
        return out

    def active(self, point: str, ctx: AdapterContext | None) -> list[nn.Module]:
        """Adapters at ``point`` selected by ``ctx``; None selects every language-independent
        adapter (language-keyed ones need the batch's language)."""
        if point not in self.slots:
            return []
        ctx = _ALL if ctx is None else ctx
        out = []
        for key, module in self.slots[point].items():
            name, _, lang = key.partition(_LANG_SEP)
            if ctx.selects(name, lang or None):
                out.append(module)
        return out

    def residual(self, point: str, h: torch.Tensor, ctx: AdapterContext | None) -> torch.Tensor:
        """``h + sum(adapter(h))`` over the active adapters at a residual point."""
        for module in self.active(point, ctx):
            h = h + module(h)
        return h

    def add_from_input(
        self, point: str, x: torch.Tensor, y: torch.Tensor, ctx: AdapterContext | None
    ) -> torch.Tensor:
        """``y + sum(adapter(x))`` at an input point (``x`` the input that produced ``y``)."""
        for module in self.active(point, ctx):
            y = y + module(x)
        return y

    def prefix(self, ctx: AdapterContext | None) -> torch.Tensor | None:
        """Concatenated prompt frames (P, C) of the active prompt adapters, or None."""
        prompts = [module() for module in self.active("prompt", ctx)]
        if not prompts:
            return None
        return torch.cat(prompts, dim=0)

    def kv_prefix(self, ctx: AdapterContext | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Concatenated key and value prefixes, each (P, C), of the active ``prefix``
        adapters, or None."""
        pairs = [module() for module in self.active("prefix", ctx)]
        if not pairs:
            return None
        return torch.cat([k for k, _ in pairs], dim=0), torch.cat([v for _, v in pairs], dim=0)


class BottleneckAdapter(Adapter):
    """LayerNorm -> down projection -> ReLU -> up projection (-> dropout).

    ``up`` starts at zero so that inserting the adapter leaves the network unchanged.

    Args:
        in_dim: C of the input.
        out_dim: C of the correction (normally ``in_dim``).
        bottleneck: hidden size B.
        dropout: dropout on the output.
        layer_norm: normalise the input first (adapters on un-normalised residual streams
            train poorly without it).

    Shapes: (N, T, in_dim) -> (N, T, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bottleneck: int = 64,
        dropout: float = 0.0,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if layer_norm else nn.Identity()
        self.down = nn.Linear(in_dim, bottleneck)
        self.up = nn.Linear(bottleneck, out_dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.up(torch.relu(self.down(self.norm(x)))))


class LoRA(Adapter):
    """Low-rank update ``(alpha / rank) * B A x`` of a linear layer (Hu et al., 2021).

    ``A`` is Kaiming-uniform and ``B`` zero, so the update starts at zero.

    Args:
        in_dim: input size of the adapted linear layer.
        out_dim: output size of the adapted linear layer.
        rank: r.
        alpha: scaling numerator.
        dropout: dropout on the input of ``A``.

    Shapes: (..., in_dim) -> (..., out_dim).
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_dim))
        self.lora_b = nn.Parameter(torch.zeros(out_dim, rank))
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """(out_dim, in_dim) weight update ``scaling * B @ A``."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scaling


class LoRALinear(nn.Module):
    """A frozen-able ``nn.Linear`` plus a :class:`LoRA` update: ``base(x) + lora(x)``.

    Args:
        base: the linear layer to adapt (kept as is; freeze it with
            :func:`freeze_all_but_adapters`).
        rank, alpha, dropout: as in :class:`LoRA`.
    """

    def __init__(
        self, base: nn.Linear, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.base = base
        self.lora = LoRA(
            base.in_features, base.out_features, rank=rank, alpha=alpha, dropout=dropout
        )
        self.lora.to(device=base.weight.device, dtype=base.weight.dtype)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora(x)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight includes the LoRA update (for deployment)."""
        out = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        out.weight.copy_(self.base.weight + self.lora.delta_weight().to(self.base.weight.dtype))
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


class PromptTuning(Adapter):
    """Learned prefix frames (Lester et al.; deep prompts as in VPT-deep).

    Args:
        in_dim: model width C.
        out_dim: must equal ``in_dim`` (present so the class fits the factory signature).
        num_prompts: P.
        init_std: standard deviation of the normal initialisation.

    Returns (on call): (P, C).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        *,
        num_prompts: int = 8,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if out_dim is not None and out_dim != in_dim:
            raise ValueError(f"PromptTuning needs in_dim == out_dim, got {in_dim} and {out_dim}")
        if num_prompts <= 0:
            raise ValueError(f"num_prompts must be positive, got {num_prompts}")
        self.prompts = nn.Parameter(torch.randn(num_prompts, in_dim) * init_std)

    def forward(self) -> torch.Tensor:
        return self.prompts


class PrefixTuning(Adapter):
    """Learned key/value prefixes inside attention (prefix tuning, Li and Liang, 2021).

    Unlike :class:`PromptTuning` nothing is added to the sequence: attention prepends the
    P learned keys and values to its projected keys and values, so every query may also
    attend to them, and the layer's output keeps its length.  Hosted at the ``prefix``
    point.

    Args:
        in_dim: model width C (the attention's key/value width).
        out_dim: must equal ``in_dim``.
        num_prefixes: P.
        init_std: standard deviation of the normal initialisation.

    Returns (on call): (keys (P, C), values (P, C)).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        *,
        num_prefixes: int = 25,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if out_dim is not None and out_dim != in_dim:
            raise ValueError(f"PrefixTuning needs in_dim == out_dim, got {in_dim} and {out_dim}")
        if num_prefixes <= 0:
            raise ValueError(f"num_prefixes must be positive, got {num_prefixes}")
        self.keys = nn.Parameter(torch.randn(num_prefixes, in_dim) * init_std)
        self.values = nn.Parameter(torch.randn(num_prefixes, in_dim) * init_std)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys, self.values


class ConvAdapter(Adapter):
    """The Conformer-convolution adapter (PETL-AST's "Conformer adapter"): a Conformer
    convolution module at bottleneck width.

    LayerNorm -> pointwise (C -> 2B) + GLU -> depthwise conv over the sequence (odd
    ``kernel``, same padding) -> LayerNorm -> Swish -> pointwise (B -> C), the last zero-
    initialised so that inserting it leaves the network unchanged.

    Args:
        in_dim: C of the input.
        out_dim: C of the correction (normally ``in_dim``).
        bottleneck: B.
        kernel: depthwise kernel size (odd).
        dropout: dropout on the output.

    Shapes: (N, T, in_dim) -> (N, T, out_dim).  The convolution runs along T, whatever
    the tokens are (frames, or a spectrogram transformer's flattened patches).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bottleneck: int = 64,
        kernel: int = 31,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"ConvAdapter kernel must be odd, got {kernel}")
        self.norm = nn.LayerNorm(in_dim)
        self.pointwise1 = nn.Linear(in_dim, 2 * bottleneck)
        self.depthwise = nn.Conv1d(bottleneck, bottleneck, kernel, padding=kernel // 2,
                                   groups=bottleneck)
        self.conv_norm = nn.LayerNorm(bottleneck)
        self.pointwise2 = nn.Linear(bottleneck, out_dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.pointwise2.weight)
        nn.init.zeros_(self.pointwise2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.glu(self.pointwise1(self.norm(x)), dim=-1)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        h = torch.nn.functional.silu(self.conv_norm(h))
        return self.dropout(self.pointwise2(h))


ADAPTER_KINDS: dict[str, type] = {
    "bottleneck": BottleneckAdapter,
    "conv": ConvAdapter,
    "lora": LoRA,
    "prompt": PromptTuning,
    "prefix": PrefixTuning,
}
"""Adapter kinds by name, for adapters described in a model config (JSON-friendly)."""


def check_adapter_specs(specs: Sequence[Any], points: Sequence[str]) -> None:
    """Validate a model config's ``adapters`` list: each entry ``{"name", "kind", "points",
    "options", "layers"}`` with a unique state-dict-safe name, a known kind whose options
    build, and a non-empty subset of ``points`` (the host blocks' points).

    Raises:
        ValueError: naming the first bad entry (``adapters[i]``) and what is wrong.
    """
    names = set()
    for i, spec in enumerate(specs):
        where = f"adapters[{i}]"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping, got {spec!r}")
        unknown = sorted(set(spec) - {"name", "kind", "points", "options", "layers"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}")
        name = spec.get("name")
        check_adapter_key("name", str(name))
        if name in names:
            raise ValueError(f"{where}: adapter name {name!r} used twice")
        names.add(name)
        adapter_factory(spec.get("kind", ""), **dict(spec.get("options") or {}))
        chosen = list(spec.get("points") or [])
        if not chosen or any(p not in points for p in chosen):
            raise ValueError(f"{where}: points must be a non-empty subset of {tuple(points)}, "
                             f"got {chosen}")


def adapter_factory(kind: str, **options) -> AdapterFactory:
    """``factory(in_dim, out_dim)`` building adapter ``kind`` (:data:`ADAPTER_KINDS`) with
    ``options`` (its keyword arguments, e.g. ``bottleneck=8``).

    Raises:
        ValueError: an unknown kind or option (named).
    """
    import functools
    import inspect

    if kind not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; expected one of {sorted(ADAPTER_KINDS)}")
    cls = ADAPTER_KINDS[kind]
    allowed = set(inspect.signature(cls).parameters) - {"in_dim", "out_dim"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"adapter kind {kind!r} has no option(s) {unknown}; it takes "
                         f"{sorted(allowed)}")
    return functools.partial(cls, **options)


def insert_adapters(
    blocks: Sequence[nn.Module],
    name: str,
    factory: AdapterFactory,
    *,
    dim: int,
    points: Sequence[str],
    allowed: Sequence[str],
    layers: Iterable[int] | None = None,
    languages: Iterable[str] | None = None,
) -> None:
    """Insert adapters ``factory(dim, dim)`` named ``name`` into the ``adapters`` slots of
    ``blocks`` (what an encoder's ``add_adapter`` does).

    Args:
        blocks: layers owning an :class:`AdapterSlots` as ``.adapters``.
        name: adapter name, unique among the blocks.
        factory: see the module doc.
        dim: the blocks' width.
        points: insertion points, each one of ``allowed`` (the blocks' points).
        layers: block indices (0-based, negative from the end); None = all.
        languages: one adapter per language, active only for that language; None = one
            language-independent adapter.

    A language-keyed name can gain languages later (one more ``lda@tt`` beside ``lda@ky``:
    language-dependent adapters added one language at a time); a name is either
    language-independent or language-keyed, never both.

    Raises:
        ValueError: a bad name/language, an existing adapter (the name, or the name for one
            of ``languages``), an unknown point or layer.
    """
    check_adapter_key("name", name)
    langs: list[str | None] = [None] if languages is None else list(languages)
    for lang in langs:
        if lang is not None:
            check_adapter_key("language", lang)
    if languages is not None and len(set(langs)) != len(langs):
        raise ValueError(f"adapter {name!r}: languages listed twice: {langs}")
    present = set().union(*(block.adapters.keys() for block in blocks))
    have = {lang for n, lang in present if n == name}
    if have and (languages is None or None in have):
        raise ValueError(f"an adapter named {name!r} already exists")
    clash = sorted(have & set(langs))
    if clash:
        raise ValueError(f"adapter {name!r} already exists for language(s) {', '.join(clash)}")
    for point in points:
        if point not in allowed:
            raise ValueError(f"unknown adapter point {point!r}; expected one of {tuple(allowed)}")
    n = len(blocks)
    indices = list(range(n)) if layers is None else list(layers)
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"layer {i} out of range for {n} blocks")
    ref = next(iter(blocks[0].parameters()))
    for i in indices:
        for point in points:
            for lang in langs:
                module = factory(dim, dim).to(device=ref.device, dtype=ref.dtype)
                blocks[i].adapters.add(point, name, module, lang)


class AdapterHost:
    """Mixin of an encoder whose ``blocks`` (of width ``dim``) each own an
    :class:`AdapterSlots` as ``.adapters``: adding, removing and listing adapters.

    The class sets ``adapter_points`` (the points its blocks offer) and
    ``default_adapter_points`` (where :meth:`add_adapter` inserts by default).
    """

    adapter_points: tuple[str, ...] = ()
    default_adapter_points: tuple[str, ...] = ("after_block",)

    def add_adapter(
        self,
        name: str,
        factory: AdapterFactory,
        *,
        points: Sequence[str] | None = None,
        layers: Iterable[int] | None = None,
        languages: Iterable[str] | None = None,
    ) -> None:
        """Insert adapters built by ``factory(in_dim, out_dim)`` into the blocks.

        Args:
            name: adapter name (unique in this encoder); forward's ``adapters`` selects by it.
            factory: e.g. ``partial(BottleneckAdapter, bottleneck=64)``,
                ``partial(LoRA, rank=8)`` (with ``points=("attn_q", "attn_v")``) or
                ``partial(PromptTuning, num_prompts=4)`` (with ``points=("prompt",)``).
            points: insertion points (of ``adapter_points``); None = the class default.
            layers: block indices (0-based, negative from the end); None = all.
            languages: build one adapter per language, active only when forward's
                ``language`` matches; None = one language-independent adapter.
        """
        insert_adapters(self.blocks, name, factory, dim=self.dim,
                        points=self.default_adapter_points if points is None else points,
                        allowed=self.adapter_points, layers=layers, languages=languages)

    def remove_adapter(self, name: str, language: str | None = None) -> int:
        """Remove the adapters called ``name`` (only ``language``'s, if given); returns how
        many modules went."""
        return sum(block.adapters.remove(name, language) for block in self.blocks)

    def adapter_names(self) -> set[str]:
        """Names of the adapters present."""
        names: set[str] = set()
        for block in self.blocks:
            names |= block.adapters.names()
        return names

    def adapter_languages(self, name: str) -> set[str]:
        """The languages a language-keyed adapter ``name`` has (empty for a
        language-independent or absent one)."""
        return {lang for block in self.blocks for n, lang in block.adapters.keys()
                if n == name and lang is not None}


def _adapter_parameter_ids(module: nn.Module) -> set[int]:
    ids: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, (Adapter, AdapterSlots)):
            ids.update(id(p) for p in sub.parameters())
    return ids


def freeze_all_but_adapters(module: nn.Module) -> int:
    """Freeze every parameter except those of adapters (:class:`Adapter` instances and
    anything held by an :class:`AdapterSlots`).

    Returns:
        The number of trainable parameters left.
    """
    keep = _adapter_parameter_ids(module)
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)
    return count_parameters(module, trainable_only=True)


def adapter_keys(module: nn.Module) -> set[tuple[str, str | None]]:
    """(name, language or None) of every adapter in any :class:`AdapterHost` of ``module``."""
    return {key for sub in module.modules() if isinstance(sub, AdapterHost)
            for block in sub.blocks for key in block.adapters.keys()}


_SLOT_KEY = re.compile(r"(?:^|\.)adapters\.slots\.[^.]+\.([^.]+)\.")


def adapter_of_key(key: str) -> tuple[str, str | None] | None:
    """(name, language or None) of the adapter a state-dict key belongs to; None for a
    key of the model itself (``...adapters.slots.<point>.<name>[@<lang>]....``)."""
    m = _SLOT_KEY.search(key)
    if m is None:
        return None
    name, _, lang = m.group(1).partition(_LANG_SEP)
    return name, lang or None


def adapter_state_dict(module: nn.Module, name: str, language: str | None = None
                       ) -> dict[str, torch.Tensor]:
    """The state-dict entries of adapter ``name`` (only ``language``'s, if given), keyed as
    in ``module.state_dict()`` (detached, on their device)."""
    out = {}
    for key, value in module.state_dict().items():
        owner = adapter_of_key(key)
        if owner is not None and owner[0] == name and (language is None or owner[1] == language):
            out[key] = value
    return out


def base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries that belong to no adapter: the base model's."""
    return {k: v for k, v in module.state_dict().items() if adapter_of_key(k) is None}


def freeze_all_but(module: nn.Module, name: str, language: str | None = None) -> int:
    """Freeze every parameter except adapter ``name``'s (only ``language``'s, if given):
    what training one language's adapter of a frozen multilingual model needs.

    Returns:
        The number of trainable parameters left.

    Raises:
        ValueError: no such adapter (language) in ``module``.
    """
    keep = set()
    for key, p in module.named_parameters():
        owner = adapter_of_key(key)
        if owner is not None and owner[0] == name and (language is None or owner[1] == language):
            keep.add(id(p))
    if not keep:
        what = name if language is None else f"{name}{_LANG_SEP}{language}"
        raise ValueError(f"no adapter {what!r} with parameters in this model")
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)
    return count_parameters(module, trainable_only=True)


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
