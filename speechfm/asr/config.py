"""Configuration of ASR training (CTC or transducer): :class:`AsrTrainConfig`, YAML, overrides.

Configuration comes from YAML (:func:`load_train_config`) with ``key=value`` overrides on
dotted paths (``optimizer.lr=2e-3``, ``model.encoder.num_layers=8``); values are parsed as
YAML and converted to the field's type (so ``1e-3``, which YAML 1.1 reads as a string,
still becomes a float), and unknown keys are errors naming their dotted path.

The model is a named size (``ctc_tiny`` ... ``ctc_large``, ``transducer_tiny`` ...
``transducer_large``) with the ``model`` mapping's overrides applied field by field
(:func:`build_model_config`); the size's prefix is the model family; the vocabulary size
always comes from the tokenizer. Transducers train with ``transducer_loss``
(:class:`~speechfm.losses.transducer.TransducerLossConfig`: pruned by default, icefall's
weights and warm-up).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechfm.errors import DataError
from speechfm.losses.transducer import TransducerLossConfig
from speechfm.train.optim import OptimizerConfig
from speechfm.train.schedulers import SchedulerConfig

__all__ = [
    "MODEL_SIZES",
    "AsrTrainConfig",
    "apply_overrides",
    "build_model_config",
    "config_from_dict",
    "create_model",
    "family_of",
    "load_train_config",
    "model_dir_config",
]

MODEL_SIZES = ("ctc_tiny", "ctc_small", "ctc_base", "ctc_large", "transducer_tiny",
               "transducer_small", "transducer_base", "transducer_large")
FAMILIES = ("ctc", "transducer")
_TARGETS = ("auto", "text", "ipa")
_AVERAGE = ("auto", "last", "checkpoints", "model_avg")


@dataclass(kw_only=True)
class AsrTrainConfig:
    """Everything ``speechfm train`` needs for an ASR run (CTC or transducer)."""

    # --- data -------------------------------------------------------------------------
    train_cuts: str
    """lhotse manifest of the training cuts (precomputed fbank used when present)."""
    dev_cuts: str | None = None
    """Manifest validated every ``valid_every`` updates (loss + greedy CER); None = none."""
    tokenizer: str
    """Tokenizer directory (bpe, unigram, char or ipa) saved by ``speechfm tokenizer train``."""
    targets: str = "auto"
    """Transcript to learn: "text", "ipa" (``custom["ipa"]``) or "auto" (ipa for an ipa tokenizer)."""
    cmvn: str | None = None
    """Global CMVN JSON (``speechfm features cmvn``) copied into the model's buffers."""
    min_utt_duration: float = 0.0
    """Training cuts shorter than this (seconds) are left out."""
    max_utt_duration: float = 30.0
    """Training cuts longer than this (seconds) are left out."""
    max_duration: float = 200.0
    """Seconds of audio per batch (per rank), before speed perturbation."""
    num_buckets: int = 10
    """Duration buckets of the bucketing sampler."""
    num_workers: int = 1
    """DataLoader worker processes (0 = load in the training process)."""
    speed_perturb: bool = False
    """Speed-perturb each training cut by a factor from ``speed_factors`` (features on the fly)."""
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    """Speed factors, drawn per cut and epoch from a hash of (seed, epoch, cut id)."""
    volume_perturb_db: float = 0.0
    """Random gain per training utterance, uniform in +-this many dB (0 = off); added to the
    log-mel features, which is what a gain does to fbank (recordings at other levels)."""
    # --- model ------------------------------------------------------------------------
    model_size: str = "ctc_small"
    """Named size to start from: ctc_{tiny,small,base,large} or transducer_{tiny,small,base,large}."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested (``{"encoder": {"dim": 144}, "specaugment": false}``)."""
    init_from: str | None = None
    """A model or checkpoint directory whose weights start the run: every parameter and
    buffer whose name starts with one of ``init_prefixes`` and whose shape matches is
    copied (e.g. a trained CTC model's encoder into a transducer, as in CTC pre-training of
    RNN-T encoders). ``--resume`` restores its checkpoint over them."""
    init_prefixes: tuple[str, ...] = ("encoder.",)
    """Name prefixes of the weights ``init_from`` provides."""
    transducer_loss: TransducerLossConfig = field(default_factory=TransducerLossConfig)
    """Transducers: pruned (default) or full RNN-T loss and its weights (ignored for CTC)."""
    # --- optimisation -----------------------------------------------------------------
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=1e-3, weight_decay=1e-3)
    )
    """AdamW/Adam settings (peak lr, betas, weight decay)."""
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(kind="noam", warmup_steps=1000)
    )
    """Learning-rate schedule; ``total_steps`` 0 is filled from the step budget."""
    max_steps: int | None = None
    """Stop after this many optimizer updates."""
    num_epochs: int | None = None
    """Stop after this many epochs."""
    max_minutes: float | None = None
    """Wall-clock training budget (all resumed runs together); stops with a checkpoint."""
    accum_grad: int = 1
    """Batches accumulated per optimizer update."""
    max_grad_norm: float | None = 5.0
    """Clip the gradient 2-norm to this (None = no clipping)."""
    amp: str = "auto"
    """Autocast: auto (bf16 on capable GPUs, fp32 on CPU), bf16, fp16 or fp32."""
    # --- run --------------------------------------------------------------------------
    exp_dir: str = "exp/ctc"
    """Output directory of the run."""
    seed: int = 42
    """Seed of weights, data order, SpecAugment, dropout and speed perturbation."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    num_threads: int = 0
    """torch intra-op threads per process on CPU (0 = usable cores / local processes)."""
    strategy: str = "ddp"
    """Data parallelism under torchrun: ddp or fsdp."""
    valid_every: int = 500
    """Validate on dev_cuts every this many updates (and at the end)."""
    log_every: int = 10
    """TensorBoard scalars every this many updates."""
    save_every: int = 1000
    """Write a resumable checkpoint every this many updates (and at the end)."""
    keep_last: int = 5
    """Step checkpoints kept on disk."""
    average: str = "auto"
    """Exported weights: auto (best dev CER), last, checkpoints or model_avg."""
    average_last: int = 3
    """Checkpoints averaged (``checkpoints``) / spanned (``model_avg``)."""
    average_period: int = 10
    """Updates between two samples of the running model average."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        for name in ("train_cuts", "tokenizer"):
            if not getattr(self, name):
                raise ValueError(f"{name} must be set")
        if self.targets not in _TARGETS:
            raise ValueError(f"targets must be one of {_TARGETS}, got {self.targets!r}")
        if not 0 <= self.min_utt_duration < self.max_utt_duration:
            raise ValueError(
                f"need 0 <= min_utt_duration < max_utt_duration, got {self.min_utt_duration} "
                f"and {self.max_utt_duration}"
            )
        positive = {"max_duration": self.max_duration, "num_buckets": self.num_buckets,
                    "accum_grad": self.accum_grad, "valid_every": self.valid_every,
                    "log_every": self.log_every, "save_every": self.save_every,
                    "keep_last": self.keep_last, "average_last": self.average_last,
                    "average_period": self.average_period}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.volume_perturb_db < 0:
            raise ValueError(f"volume_perturb_db must be >= 0, got {self.volume_perturb_db}")
        if self.num_workers < 0 or self.num_threads < 0:
            raise ValueError("num_workers and num_threads must be >= 0")
        if self.init_from is not None and not self.init_prefixes:
            raise ValueError("init_from needs at least one name prefix in init_prefixes")
        if not self.speed_factors or any(f <= 0 for f in self.speed_factors):
            raise ValueError(f"speed_factors must be positive, got {list(self.speed_factors)}")
        if self.max_steps is None and self.num_epochs is None and self.max_minutes is None:
            raise ValueError("give a budget: max_steps, num_epochs and/or max_minutes")
        for name in ("max_steps", "num_epochs", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 when set, got {value}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.amp not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"amp must be auto, bf16, fp16 or fp32, got {self.amp!r}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy must be ddp or fsdp, got {self.strategy!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.average not in _AVERAGE:
            raise ValueError(f"average must be one of {_AVERAGE}, got {self.average!r}")
        if self.average in ("model_avg", "auto") and self.keep_last < 2:
            raise ValueError("average model_avg/auto needs keep_last >= 2 (a start checkpoint)")
        self.optimizer.validate()
        self.transducer_loss.validate()
        needs_total = self.scheduler.kind == "cosine" or (
            self.scheduler.kind == "tri_stage" and self.scheduler.phase_ratios is not None
        )
        if needs_total and not self.scheduler.total_steps and self.max_steps is None:
            if self.num_epochs is None:
                raise ValueError(
                    f"scheduler {self.scheduler.kind!r} needs a length: set max_steps, "
                    "num_epochs or scheduler.total_steps"
                )
        elif needs_total:
            dataclasses.replace(
                self.scheduler, total_steps=self.scheduler.total_steps or self.max_steps
            ).validate()
        else:
            self.scheduler.validate()
        model_config = build_model_config(self, vocab_size=2)  # model_size and every override
        head = getattr(model_config, "ctc_head", None)
        if head is not None and head != (self.transducer_loss.ctc_scale > 0):
            # a head without its loss would be an untrained layer (and unused under DDP)
            raise ValueError(
                f"model.ctc_head is {head} but transducer_loss.ctc_scale is "
                f"{self.transducer_loss.ctc_scale}: the CTC head and its loss go together"
            )

    @property
    def family(self) -> str:
        """The model family, "ctc" or "transducer" (the prefix of ``model_size``)."""
        return family_of(self.model_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        out = dataclasses.asdict(self)
        for key in ("speed_factors", "init_prefixes"):
            out[key] = list(out[key])
        out["optimizer"]["betas"] = list(self.optimizer.betas)
        out["optimizer"]["no_decay"] = list(self.optimizer.no_decay)
        if self.scheduler.phase_ratios is not None:
            out["scheduler"]["phase_ratios"] = list(self.scheduler.phase_ratios)
        return out


# ------------------------------------------------------------------ config from YAML


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to type ``tp`` (as annotated on a dataclass field)."""
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
                return _coerce(value, option, where)
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
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
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


def config_from_dict(cls: type, data: Mapping[str, Any], *, where: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, converting values to the field types.

    Raises:
        ValueError: an unknown key, a missing required field or an unconvertible value,
            named by its dotted path.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
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
        kwargs[key] = _coerce(value, hints[key], path)
    missing = [
        n for n, f in names.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{cls.__name__}: required keys missing: {missing}")
    return cls(**kwargs)


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


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (values parsed as YAML).

    Raises:
        ValueError: an override without ``=`` or through a non-section.
    """
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value")
        _set_path(out, key.strip(), _parse_value(text))
    return out


def load_train_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    *,
    exp_dir: str | None = None,
) -> AsrTrainConfig:
    """Read an :class:`AsrTrainConfig` from YAML, apply ``key=value`` overrides, validate.

    Args:
        path: YAML file (a mapping of the config's fields); None starts from no keys.
        overrides: dotted ``key=value`` strings applied after the file.
        exp_dir: replaces ``exp_dir`` when given (``--exp-dir``).

    Raises:
        DataError: the file cannot be read or is not a mapping.
        ValueError: unknown keys, bad values or an inconsistent configuration.
    """
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise DataError(f"{path}: cannot read the training config: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise DataError(f"{path}: the training config must be a YAML mapping")
        data = loaded
    data = apply_overrides(data, overrides)
    if exp_dir is not None:
        data["exp_dir"] = str(exp_dir)
    config = config_from_dict(AsrTrainConfig, data)
    config.validate()
    return config


def family_of(model_size: str) -> str:
    """"ctc" or "transducer" for a named size.

    Raises:
        ValueError: not one of :data:`MODEL_SIZES`.
    """
    if model_size not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {MODEL_SIZES}, got {model_size!r}")
    return model_size.split("_", 1)[0]


def _named_size(name: str, vocab_size: int):
    from speechfm.models import ctc, transducer

    module = ctc if family_of(name) == "ctc" else transducer
    return getattr(module, name)(vocab_size)


def create_model(model_config):
    """Build the model of a CTC or transducer model config (by its type)."""
    from speechfm.models.ctc import CtcModelConfig, create_ctc_model
    from speechfm.models.transducer import TransducerModelConfig, create_transducer_model

    if isinstance(model_config, CtcModelConfig):
        return create_ctc_model(model_config)
    if isinstance(model_config, TransducerModelConfig):
        return create_transducer_model(model_config)
    raise TypeError(f"not an ASR model config: {type(model_config).__name__}")


def _override_dataclass(obj: Any, overrides: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        path = f"{where}.{key}"
        if key not in names:
            raise ValueError(f"unknown model key {path} (known: {sorted(names)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = _override_dataclass(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(obj, **changes)


def build_model_config(config: AsrTrainConfig, vocab_size: int):
    """The model config of ``config`` (a :class:`CtcModelConfig` or
    :class:`TransducerModelConfig`): the named size with ``model`` overrides applied.

    Raises:
        ValueError: an unknown size or key, ``vocab_size`` among the overrides (it comes
            from the tokenizer), or an invalid resulting model.
    """
    if "vocab_size" in config.model:
        raise ValueError("model.vocab_size cannot be set: it comes from the tokenizer")
    model_config = _override_dataclass(_named_size(config.model_size, vocab_size), config.model, "model")
    model_config.validate()
    return model_config


def model_dir_config(model_config) -> dict[str, Any]:
    """The ``config.json`` of a model directory: ``{"family", "model", "tokenizer",
    "frame_shift_s", "speechfm_version"}``."""
    from speechfm import __version__

    model = model_config.to_dict()
    return {
        "family": model["family"],
        "model": model,
        "tokenizer": "tokenizer",
        "frame_shift_s": model_config.frame_shift_s,
        "speechfm_version": __version__,
    }
