"""The model directory: one format for every model family, and the one family table.

A model directory (``exp/<run>/final``, a training checkpoint, or a converted checkpoint)
holds::

    config.json          {"format_version": 2, "family": "ctc", "model": <model config>,
                          "parts": {"tokenizer": "tokenizer", ...}, "sample_rate": 16000,
                          "frame_shift_s": 0.04, "speechfm_version": "..."}
    model.safetensors    the weights (feature-normalisation statistics included)
    tokenizer/           optional: the output tokenizer (ASR families)
    labels.json          optional: class labels (classification families)
    lexicon.txt          optional: word -> phones lexicon (phoneme models)
    adapters/            optional: adapter files attached on load, one <stem>.safetensors
                         (+ .json metadata) each (speechfm.models.adapter_store): e.g. one
                         language-dependent adapter per language
    lm_tokenizer/        optional: the transformers tokenizer of a speech LM's causal LM
                         (save_pretrained; reloaded with AutoTokenizer, local files only)
    graph/               optional: a CTC decoding graph (lexicon + n-gram LM, or a token
                         LM; speechfm.decode.graph.DecodingGraph)

Nothing in it is unpickled: weights are safetensors, everything else JSON or text.

``config.json``'s ``"family"`` picks the entry of :data:`FAMILIES`, the one table of model
families: ``family name -> ModelFamily`` (the config class and the factory). The loader,
``speechfm.load``, ``speechfm decode``, the recipes and the converters all go through it;
a new family (a recipe's own model, or a test's toy) is added with
:func:`register_family`, without touching the library.

The family contract (what a generic loop, decoder and API call, never asking the family):

- ``model.encoder``: the shared front end
  (:class:`~speechfm.models.conformer.speech_encoder.SpeechEncoder` or a sibling with the
  same interface: ``sample_rate``, ``frame_shift_s``, ``feature_extractor()``,
  ``set_cmvn``);
- ``model(batch, **kwargs) -> (loss_sum, count, stats)``: the training loss of a batch
  (see :mod:`speechfm.train.runner` for the batch dict);
- ``model.encode(feats, x_lens, return_layers=..., ...)``: encoder output (and layers);
- ASR families add ``recognize(feats, x_lens, method=, beam=, ...) -> [hypothesis]``
  (``.tokens``, ``.token_frames``, ``.token_end_frames``, ``.token_confidences``), and
  streaming ones ``stream(...)``; ``vocab_size`` must match the tokenizer.

Directories written before this format (no ``format_version``) are upgraded on load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.errors import DataError

__all__ = [
    "CONFIG_FILE",
    "FAMILIES",
    "FORMAT_VERSION",
    "PARTS",
    "WEIGHTS_FILE",
    "LoadedModel",
    "ModelFamily",
    "get_family",
    "init_weights",
    "load_model_dir",
    "load_part",
    "read_encoder_config",
    "read_json_object",
    "read_model_config",
    "register_family",
    "save_model_dir",
]

log = logging.getLogger("speechfm.models")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 2
"""Version of the directory layout written here (1: before the shared front end)."""


@dataclass(frozen=True)
class ModelFamily:
    """One model family: how its config is read and its module built."""

    name: str
    """The ``"family"`` value in config.json."""
    config_class: type
    """The family's config dataclass (``validate()``; read with :mod:`speechfm.config`)."""
    create: Callable[[Any], nn.Module]
    """Factory: config -> module (fresh weights)."""
    interop: str | None = None
    """Module with checkpoint converters (``speechfm convert``), if any."""
    asr_head: str | None = None
    """The ASR output a fine-tune from this family trains (``speechfm finetune``): ``"ctc"``
    (its CTC head, or a new one on an encoder-only family), ``"transducer"`` (predictor and
    joiner), or None (not a starting point for speech recognition)."""


def _ctc() -> ModelFamily:
    from speechfm.models.ctc import CtcModelConfig, create_ctc_model

    # Only the shared encoder converts (to a transformers Wav2Vec2BertModel).
    return ModelFamily("ctc", CtcModelConfig, create_ctc_model,
                       interop="speechfm.models.conformer.interop", asr_head="ctc")


def _transducer() -> ModelFamily:
    from speechfm.models.transducer import TransducerModelConfig, create_transducer_model

    return ModelFamily("transducer", TransducerModelConfig, create_transducer_model,
                       interop="speechfm.models.conformer.interop", asr_head="transducer")


def _encoder() -> ModelFamily:
    from speechfm.models.encoder import EncoderModelConfig, create_encoder_model

    return ModelFamily("encoder", EncoderModelConfig, create_encoder_model,
                       interop="speechfm.models.conformer.interop", asr_head="ctc")


def _w2v_bert() -> ModelFamily:
    from speechfm.models.w2v_bert import W2vBertModelConfig, create_w2v_bert_model

    return ModelFamily("w2v_bert", W2vBertModelConfig, create_w2v_bert_model,
                       interop="speechfm.models.conformer.interop", asr_head="ctc")


def _ast() -> ModelFamily:
    from speechfm.models.ast import AstModelConfig, create_ast_model

    return ModelFamily("ast", AstModelConfig, create_ast_model,
                       interop="speechfm.models.ast.interop")


def _classifier() -> ModelFamily:
    from speechfm.models.classifier import ClassifierModelConfig, create_classifier_model

    return ModelFamily("classifier", ClassifierModelConfig, create_classifier_model,
                       interop="speechfm.models.conformer.interop")


def _speech_lm() -> ModelFamily:
    from speechfm.models.speech_lm import SpeechLMConfig, create_speech_lm_model

    return ModelFamily("speech_lm", SpeechLMConfig, create_speech_lm_model)


def _asit() -> ModelFamily:
    from speechfm.models.asit import AsitModelConfig, create_asit_model

    return ModelFamily("asit", AsitModelConfig, create_asit_model)


FAMILIES: dict[str, Callable[[], ModelFamily]] = {
    "asit": _asit,
    "ast": _ast,
    "classifier": _classifier,
    "ctc": _ctc,
    "transducer": _transducer,
    "encoder": _encoder,
    "speech_lm": _speech_lm,
    "w2v_bert": _w2v_bert,
}
"""Family name -> a function returning its :class:`ModelFamily` (imports stay lazy)."""


def register_family(family: ModelFamily) -> None:
    """Add (or replace) a model family, e.g. a recipe's own model."""
    FAMILIES[family.name] = lambda: family


def get_family(name: str) -> ModelFamily:
    """The :class:`ModelFamily` called ``name``.

    Raises:
        DataError: no such family.
    """
    if name not in FAMILIES:
        raise DataError(f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]()


def family_of_config(model_config: Any) -> ModelFamily:
    """The family whose config class ``model_config`` is an instance of (its ``family``
    class attribute names it)."""
    name = getattr(type(model_config), "family", None)
    family = get_family(name) if isinstance(name, str) and name in FAMILIES else None
    if family is None or not isinstance(model_config, family.config_class):
        raise DataError(f"{type(model_config).__name__} is not the config of a registered family")
    return family


# ------------------------------------------------------------------------ optional parts


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    tokenizer.save(path)


def _load_tokenizer(path: Path) -> Any:
    from speechfm.text.base import load_tokenizer

    return load_tokenizer(path)


def _save_lm_tokenizer(tokenizer: Any, path: Path) -> None:
    from speechfm.models.speech_lm.tokenizer import save_lm_tokenizer

    save_lm_tokenizer(tokenizer, path)


def _load_lm_tokenizer(path: Path) -> Any:
    from speechfm.models.speech_lm.tokenizer import load_lm_tokenizer

    return load_lm_tokenizer(path)


def _save_json(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file holding an object (a config.json, an index).

    Raises:
        DataError: unreadable, not JSON, or not an object (the path is named).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def _save_lexicon(lexicon: Mapping[str, Sequence[Sequence[str]]], path: Path) -> None:
    from speechfm.text.lexicon import write_lexicon  # the one lexicon.txt writer

    write_lexicon(lexicon, path)


def _load_lexicon(path: Path) -> dict[str, list[list[str]]]:
    from speechfm.text.lexicon import read_lexicon

    return read_lexicon(path).to_dict()


def _save_adapters(adapters: Mapping[str, Any], path: Path) -> None:
    from speechfm.models.adapter_store import AdapterFile, save_adapter

    path.mkdir(parents=True, exist_ok=True)
    for stem, adapter in adapters.items():
        if not isinstance(adapter, AdapterFile):
            raise TypeError(f"adapters part: {stem!r} must be an AdapterFile "
                            "(speechfm.models.adapter_store.export_adapter)")
        save_adapter(adapter, path / stem)


def _load_adapters(path: Path) -> dict[str, Any]:
    from speechfm.models.adapter_store import read_adapter

    return {p.stem: read_adapter(p) for p in sorted(path.glob("*.safetensors"))}


def _save_language_id(value: Any, path: Path) -> None:
    from speechfm.models.language_id import save_language_id

    head, meta = value
    save_language_id(head, path, base_hash=meta["base_hash"], extra=meta)


def _load_language_id(path: Path) -> Any:
    from speechfm.models.language_id import load_language_id

    return load_language_id(path)


def _save_graph(graph: Any, path: Path) -> None:
    graph.save(path)


def _load_graph(path: Path) -> Any:
    from speechfm.decode.graph import DecodingGraph

    return DecodingGraph.load(path)


@dataclass(frozen=True)
class Part:
    """An optional part of a model directory: its file or folder name and its I/O."""

    file: str
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]


PARTS: dict[str, Part] = {
    "tokenizer": Part("tokenizer", _save_tokenizer, _load_tokenizer),
    "labels": Part("labels.json", _save_json, _load_json),
    "lexicon": Part("lexicon.txt", _save_lexicon, _load_lexicon),
    "adapters": Part("adapters", _save_adapters, _load_adapters),
    "lm_tokenizer": Part("lm_tokenizer", _save_lm_tokenizer, _load_lm_tokenizer),
    "graph": Part("graph", _save_graph, _load_graph),
    "language_id": Part("language_id.safetensors", _save_language_id, _load_language_id),
}
"""Optional parts of a model directory, by name (config.json's ``"parts"`` lists those present)."""


def load_part(directory: str | os.PathLike, name: str, meta: Mapping[str, Any] | None = None) -> Any:
    """Load optional part ``name`` of a model directory; None when it has none.

    Raises:
        DataError: an unknown part, or config.json names a part whose file is missing.
    """
    directory = Path(directory)
    if name not in PARTS:
        raise DataError(f"unknown model-directory part {name!r} (known: {', '.join(PARTS)})")
    meta = read_model_config(directory) if meta is None else meta
    file = (meta.get("parts") or {}).get(name)
    if file is None:
        return None
    path = directory / file
    if not path.exists():
        raise DataError(f"{directory}: config.json lists a {name} ({file}) that is missing")
    return PARTS[name].load(path)


# ------------------------------------------------------------------------ saving


def model_dir_config(model_config: Any, *, parts: Sequence[str] = (),
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config.json of a model directory for ``model_config`` (see the module doc)."""
    from speechfm import __version__
    from speechfm.config import config_to_dict

    family = family_of_config(model_config)
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "family": family.name,
        "model": config_to_dict(model_config),
        "parts": {name: PARTS[name].file for name in parts},
    }
    encoder = getattr(model_config, "encoder", None)
    fbank = getattr(encoder, "fbank", None)
    if fbank is not None:
        out["sample_rate"] = fbank.sample_rate
    if hasattr(model_config, "frame_shift_s"):
        out["frame_shift_s"] = model_config.frame_shift_s
    out["speechfm_version"] = __version__
    out.update(extra or {})
    return out


def save_model_dir(
    directory: str | os.PathLike,
    model: nn.Module | Mapping[str, torch.Tensor],
    model_config: Any,
    *,
    parts: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model directory atomically (written aside, then renamed into place).

    Args:
        directory: where (replaced if it exists).
        model: the module, or its state dict.
        model_config: its family config (the family is found from the config's class).
        parts: optional parts by name (:data:`PARTS`): ``{"tokenizer": tok, ...}``.
        extra: more top-level keys for config.json.

    Returns:
        ``directory`` as a Path.
    """
    from safetensors.torch import save_file

    parts = {k: v for k, v in (parts or {}).items() if v is not None}
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown model-directory parts {unknown} (known: {list(PARTS)})")
    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    for name, value in parts.items():
        PARTS[name].save(value, tmp / PARTS[name].file)
    meta = model_dir_config(model_config, parts=list(parts), extra=extra)
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(tmp, directory)
    return directory


# ------------------------------------------------------------------------ loading


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """``path`` itself, or the checkpoint ``path/latest`` names (a training run's checkpoint root).

    Raises:
        DataError: it does not exist or is not a directory.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: model directory does not exist")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory (expected a model directory with {CONFIG_FILE})")
    if not (path / CONFIG_FILE).is_file() and (path / "latest").is_file():
        name = (path / "latest").read_text(encoding="utf-8").strip()
        if name and (path / name / CONFIG_FILE).is_file():
            return path / name
    return path


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a model directory, upgraded to the current format.

    Raises:
        DataError: missing, not JSON, not an object, or without a model section / family.
    """
    directory = Path(directory)
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise DataError(f"{directory}: not a model directory ({CONFIG_FILE} is missing)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DataError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("model"), dict):
        raise DataError(f'{file}: no "model" section (the model config) in it')
    if "format_version" not in meta:
        meta = _upgrade_v1_config(meta)
    if meta["format_version"] > FORMAT_VERSION:
        raise DataError(f"{file}: format_version {meta['format_version']} is newer than this "
                        f"speechfm reads ({FORMAT_VERSION}); upgrade speechfm")
    family = meta.get("family")
    if family is None:
        raise DataError(f'{file}: no "family" key saying which kind of model this is')
    if family not in FAMILIES:
        raise DataError(f"{file}: unknown model family {family!r} (this speechfm loads: "
                        f"{', '.join(sorted(FAMILIES))})")
    return meta


_V1_SPECAUG = ("num_freq_masks", "freq_mask_width", "num_time_masks", "time_mask_multiplicity",
               "time_mask_max_frac", "time_warp")


def _upgrade_v1_config(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (fbank/CMVN/SpecAugment beside the Conformer in each family's config) -> 2."""
    model = dict(meta["model"])
    family = meta.get("family", model.pop("family", None))
    model.pop("family", None)
    if not isinstance(model.get("encoder"), dict):
        raise DataError(f"format-1 config without an encoder section (family {family!r})")
    encoder = {
        "fbank": model.pop("fbank", {}),
        "normalization": "global" if model.pop("use_cmvn", True) else "none",
        "specaugment": model.pop("specaugment", True),
        "specaug": {k: model.pop(f"specaug_{k}") for k in _V1_SPECAUG if f"specaug_{k}" in model},
        "conformer": model.pop("encoder"),
    }
    model["encoder"] = encoder
    tokenizer = meta.get("tokenizer", "tokenizer")
    return {"format_version": 1, "family": family, "model": model,
            "parts": {"tokenizer": tokenizer} if tokenizer else {},
            "frame_shift_s": meta.get("frame_shift_s"),
            "speechfm_version": meta.get("speechfm_version")}


def _upgrade_v1_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("cmvn."):
            key = "encoder." + key
        elif key.startswith("encoder."):
            key = "encoder.conformer." + key[len("encoder."):]
        out[key] = value
    return out


def read_weights(directory: str | os.PathLike, meta: Mapping[str, Any] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The state dict of a model (or checkpoint) directory, upgraded to the current format.

    Raises:
        DataError: the weights file is missing or unreadable (never unpickled).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    file = directory / WEIGHTS_FILE
    if not file.is_file():
        raise DataError(f"{directory}: no model weights ({WEIGHTS_FILE} is missing)")
    try:
        state = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"{file}: cannot read the weights ({e})") from e
    if meta is None and (directory / CONFIG_FILE).is_file():
        meta = read_model_config(directory)
    if meta is not None and meta.get("format_version", 1) < 2:
        state = _upgrade_v1_weights(state)
    return state


def _list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: Any) -> None:
    """Load ``state`` into ``module``, naming every missing, unexpected or mis-shaped key.

    Raises:
        DataError: they do not match.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {_list(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_list(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches (file vs config): {_list(shapes)}")
        raise DataError(f"{where}: weights do not match the model config.json describes; "
                        + "; ".join(problems))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


@dataclass
class LoadedModel:
    """What :func:`load_model_dir` returns."""

    module: nn.Module
    """The model, in eval mode."""
    config: Any
    """Its family config (dataclass)."""
    family: str
    """The family name."""
    directory: Path
    """Where it came from."""
    meta: dict[str, Any] = field(default_factory=dict)
    """config.json (upgraded)."""
    tokenizer: Any = None
    """The tokenizer part, or None."""


def build_model(meta: Mapping[str, Any], where: Any = "config.json") -> tuple[nn.Module, Any]:
    """(module with fresh weights, family config) of a model directory's config.json."""
    from speechfm.config import config_from_dict

    family = get_family(meta["family"])
    try:
        config = config_from_dict(family.config_class, meta["model"], where="model")
        config.validate()
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{where}: invalid {family.name} model config: {e}") from e
    return family.create(config), config


def load_model_dir(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                   tokenizer: bool = True) -> LoadedModel:
    """Rebuild the model of a model directory (or a training checkpoint).

    Args:
        path: the directory (or a checkpoint root whose ``latest`` names one).
        device: where the module goes.
        tokenizer: also load the tokenizer part when present.

    Adapter files in its ``adapters/`` part are attached after the base weights load.

    Raises:
        DataError: what is missing or inconsistent, named (config.json, weights, family,
            missing/unexpected/mis-shaped keys, tokenizer size against ``vocab_size``, an
            adapter made for another base model).
    """
    directory = resolve_model_dir(path)
    meta = read_model_config(directory)
    module, config = build_model(meta, directory / CONFIG_FILE)
    load_state_strict(module, read_weights(directory, meta), directory / WEIGHTS_FILE)
    stored = load_part(directory, "adapters", meta)
    if stored:
        from speechfm.models.adapter_store import attach_adapter, base_model_hash

        base = base_model_hash(module)
        for adapter in stored.values():
            attach_adapter(module, adapter, base_hash=base)
    tok = load_part(directory, "tokenizer", meta) if tokenizer else None
    vocab = getattr(module, "vocab_size", None)
    if tok is not None and vocab is not None and tok.vocab_size != vocab:
        raise DataError(f"{directory}: the tokenizer has {tok.vocab_size} tokens but the model "
                        f"outputs {vocab}")
    return LoadedModel(module.to(device).eval(), config, meta["family"], directory, meta, tok)


def read_encoder_config(directory: str | os.PathLike):
    """The :class:`SpeechEncoderConfig` of a model directory's shared speech encoder (to
    build a model around a pretrained or converted encoder as it is).

    Raises:
        DataError: not a model directory, or its model has no speech encoder.
    """
    from speechfm.config import config_from_dict
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

    meta = read_model_config(directory)
    encoder = meta["model"].get("encoder")
    if not isinstance(encoder, dict):
        raise DataError(f"{directory}: its {meta['family']} model has no speech encoder")
    try:
        return config_from_dict(SpeechEncoderConfig, encoder, where=f"{directory}:encoder")
    except (TypeError, ValueError) as e:
        raise DataError(f"{directory}: invalid encoder config: {e}") from e


def init_weights(model: nn.Module, source: str | os.PathLike,
                 prefixes: Sequence[str] = ("encoder.",)) -> list[str]:
    """Copy the weights of model or checkpoint directory ``source`` whose names start with
    one of ``prefixes`` into ``model`` (same name and shape); returns the names copied.

    This is how a run starts from another model (``init_from``): a CTC model's encoder
    into a transducer, a pretrained encoder into a fine-tuned model. Only safetensors are
    read, so an untrusted source cannot run code.

    Raises:
        DataError: ``source`` has no weights, or nothing matched.
        ValueError: a matching name has another shape (the message names it).
    """
    theirs = read_weights(source)
    own = model.state_dict()
    wanted = [k for k in own if any(k.startswith(p) for p in prefixes)]
    copied, missing = [], []
    for key in wanted:
        if key not in theirs:
            missing.append(key)
            continue
        if theirs[key].shape != own[key].shape:
            raise ValueError(f"init_from {source}: {key} has shape {tuple(theirs[key].shape)}, "
                             f"the model's is {tuple(own[key].shape)}")
        copied.append(key)
    if not copied:
        raise DataError(f"init_from {source}: no weight named {list(prefixes)}* matches the model")
    with torch.no_grad():
        for key in copied:
            own[key].copy_(theirs[key].to(own[key].dtype))
    log.info("initialised %d tensors (%s*) from %s%s", len(copied), ", ".join(prefixes), source,
             f"; {len(missing)} not in it: {missing[:5]}" if missing else "")
    return copied
