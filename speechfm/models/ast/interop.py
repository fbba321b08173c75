"""Checkpoint interop between the spectrogram transformer and transformers' AST.

transformers' ``ASTModel`` / ``ASTForAudioClassification`` (``model_type``
``"audio-spectrogram-transformer"``: MIT/ast-finetuned-audioset-10-10-0.4593,
MIT/ast-finetuned-speech-commands-v2 and their fine-tuned descendants) and the ``"ast"``
family (:class:`~speechfm.models.ast.AstModel`) compute the same function; the
conversion is exact both ways (weights are moved, never approximated):

- HF's patch convolution runs over ``(N, 1, F, T)`` (frequency first) with stride
  ``(frequency_stride, time_stride)`` and flattens the patches frequency-major; ours runs
  over ``(N, 1, T, F)`` with ``patch_stride = (time_stride, frequency_stride)`` and
  flattens them time-major.  So the kernel's last two dims are transposed and the patch
  rows of the positional embeddings permuted (the CLS and distillation rows stay first).
- HF's model takes ``input_values``, the fbank already normalised as
  ``(x - mean) / (2 std)`` and padded (zero fbank) or cut to ``max_length`` by
  ``ASTFeatureExtractor``; ours takes the raw fbank and does the same inside
  (:meth:`~speechfm.models.ast.SpectrogramTransformer.normalize`) with
  ``norm_mean``/``norm_std`` from ``preprocessor_config.json`` (``do_normalize: false``
  becomes ``mean 0, std 0.5``, the identity).  The fbank is :func:`ast_fbank`, which
  is what ``ASTFeatureExtractor`` computes (torchaudio's Kaldi fbank or its numpy twin).
- The pooled output is the mean of the CLS and distillation tokens after the final
  LayerNorm (``pooling="cls_dist"``); the head is LayerNorm + Linear.

What cannot map exactly is refused with a :class:`~speechfm.errors.DataError` naming the
field (an activation other than exact ``"gelu"``, ``qkv_bias: false``, a non-square or
non-int ``patch_size``, a ``head_dim`` other than ``hidden_size / num_attention_heads``;
on export: no distillation token, another pooling, non-square patches, fbank settings
other than ``ast_fbank(16000, num_mel_bins)``).  Dropouts map as
``hidden_dropout_prob`` <-> ``dropout`` and ``attention_probs_dropout_prob`` <->
``attn_dropout``; they act in training only (speechfm's MLP also drops out between its
two linears, HF's does not), so eval outputs are identical.  ``head_dropout`` and
SpecAugment have no HF counterpart (training only) and are not exported; converted
models come with SpecAugment off (turn ``specaugment`` on to fine-tune).

Tensor names (``i`` = layer; ASTForAudioClassification prefixes the backbone with
``audio_spectrogram_transformer.``).  ``save_pretrained`` files and the Hub hold the
"checkpoint" names; transformers 5 modules use the "module" names in memory and rename on
load/save.  Both are read; :func:`state_dict_to_hf` writes either::

    checkpoint                                    module (transformers 5)     speechfm
    embeddings.cls_token                          (same)                      encoder.cls_token
    embeddings.distillation_token                 (same)                      encoder.dist_token
    embeddings.position_embeddings                (same)                      encoder.pos_embed  (rows permuted)
    embeddings.patch_embeddings.projection.*      (same)                      encoder.patch_embed.proj.*  (kernel transposed)
    encoder.layer.i.layernorm_before.*            layers.i.layernorm_before.*  encoder.blocks.i.attn_norm.*
    encoder.layer.i.attention.attention.query.*   layers.i.attention.q_proj.*  encoder.blocks.i.attn.q_proj.*
    encoder.layer.i.attention.attention.key.*     layers.i.attention.k_proj.*  encoder.blocks.i.attn.k_proj.*
    encoder.layer.i.attention.attention.value.*   layers.i.attention.v_proj.*  encoder.blocks.i.attn.v_proj.*
    encoder.layer.i.attention.output.dense.*      layers.i.attention.o_proj.*  encoder.blocks.i.attn.out_proj.*
    encoder.layer.i.layernorm_after.*             layers.i.layernorm_after.*   encoder.blocks.i.ffn_norm.*
    encoder.layer.i.intermediate.dense.*          layers.i.mlp.fc1.*           encoder.blocks.i.ffn.linear1.*
    encoder.layer.i.output.dense.*                layers.i.mlp.fc2.*           encoder.blocks.i.ffn.linear2.*
    layernorm.*                                   (same)                      encoder.final_norm.*
    classifier.layernorm.*                        (same)                      head.0.*
    classifier.dense.*                            (same)                      head.1.*

transformers is optional: only :func:`hf_config_from_ast` and :func:`export_hf_dir`
import it; :func:`convert_hf_dir` reads ``config.json`` and the weights files itself
(safetensors, or ``pytorch_model.bin`` through ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from speechfm.errors import DataError
from speechfm.models.ast.config import AUDIOSET_MEAN, AUDIOSET_STD, AstModelConfig, ast_fbank
from speechfm.models.io import read_json_object

__all__ = [
    "HF_MODEL_TYPE",
    "config_from_hf",
    "convert_from_hf_dir",
    "convert_hf_dir",
    "convert_to_hf_dir",
    "export_hf_dir",
    "hf_config_from_ast",
    "preprocessor_config",
    "state_dict_from_hf",
    "state_dict_to_hf",
]

HF_MODEL_TYPE = "audio-spectrogram-transformer"
"""transformers' ``model_type`` of AST checkpoints."""
HF_PREFIX = "audio_spectrogram_transformer."
"""Prefix of the backbone's tensors in an ``ASTForAudioClassification`` state dict."""
LAYOUTS = ("checkpoint", "module")
"""Tensor-name layouts of :func:`state_dict_to_hf` (see the module doc)."""

# Per-layer names: speechfm suffix -> (checkpoint suffix, transformers-5 module suffix).
_LAYER_NAMES = {
    "attn_norm": ("layernorm_before", "layernorm_before"),
    "attn.q_proj": ("attention.attention.query", "attention.q_proj"),
    "attn.k_proj": ("attention.attention.key", "attention.k_proj"),
    "attn.v_proj": ("attention.attention.value", "attention.v_proj"),
    "attn.out_proj": ("attention.output.dense", "attention.o_proj"),
    "ffn_norm": ("layernorm_after", "layernorm_after"),
    "ffn.linear1": ("intermediate.dense", "mlp.fc1"),
    "ffn.linear2": ("output.dense", "mlp.fc2"),
}
_LAYER_PREFIX = {"checkpoint": "encoder.layer.", "module": "layers."}
# Whole-model names (no layer index): speechfm name -> HF name (both layouts).
_TOP_NAMES = {
    "encoder.cls_token": "embeddings.cls_token",
    "encoder.dist_token": "embeddings.distillation_token",
    "encoder.pos_embed": "embeddings.position_embeddings",
    "encoder.patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "encoder.patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "encoder.final_norm.weight": "layernorm.weight",
    "encoder.final_norm.bias": "layernorm.bias",
}
_HEAD_NAMES = {
    "head.0.weight": "classifier.layernorm.weight",
    "head.0.bias": "classifier.layernorm.bias",
    "head.1.weight": "classifier.dense.weight",
    "head.1.bias": "classifier.dense.bias",
}
_HF_LAYER_RE = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_HF_TO_OURS_LAYER = {hf: ours for ours, names in _LAYER_NAMES.items() for hf in names}

# ASTFeatureExtractor's defaults (preprocessor_config.json fields).
_FE_DEFAULTS = {"sampling_rate": 16000, "num_mel_bins": 128, "max_length": 1024,
                "do_normalize": True, "mean": AUDIOSET_MEAN, "std": AUDIOSET_STD}


def _get(hf_config: Any, name: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(name, default)
    return getattr(hf_config, name, default)


# ----------------------------------------------------------------------------- configs


def config_from_hf(
    hf_config: Any,
    *,
    num_classes: int | None = None,
    feature_extractor: Mapping[str, Any] | None = None,
) -> AstModelConfig:
    """The :class:`AstModelConfig` computing what transformers' AST model ``hf_config``
    describes.

    Args:
        hf_config: an ``ASTConfig`` or its config.json as a dict.
        num_classes: classes of the head; None = ``len(id2label)`` when the config's
            ``architectures`` name ``ASTForAudioClassification``, else 0 (a bare
            ``ASTModel``).
        feature_extractor: preprocessor_config.json (``ASTFeatureExtractor``) as a dict;
            its ``mean``/``std``/``do_normalize`` and ``sampling_rate`` set the
            normalisation and the fbank rate. None = the extractor's defaults (AudioSet
            statistics, 16 kHz).

    Raises:
        DataError: a field that cannot map exactly, named.
    """
    model_type = _get(hf_config, "model_type", HF_MODEL_TYPE)
    if model_type != HF_MODEL_TYPE:
        raise DataError(f"model_type must be {HF_MODEL_TYPE!r}, got {model_type!r}")
    act = _get(hf_config, "hidden_act", "gelu")
    if act != "gelu":
        raise DataError(f"hidden_act must be 'gelu' (the exact erf GELU of speechfm's "
                        f"transformer blocks), got {act!r}")
    if not _get(hf_config, "qkv_bias", True):
        raise DataError("qkv_bias must be true (speechfm's attention projections have biases)")
    patch = _get(hf_config, "patch_size", 16)
    if isinstance(patch, (list, tuple)) and len(patch) == 2 and patch[0] == patch[1]:
        patch = patch[0]
    if isinstance(patch, bool) or not isinstance(patch, int):
        raise DataError(f"patch_size must be one int (square patches, as HF's model "
                        f"computes them), got {patch!r}")
    hidden = int(_get(hf_config, "hidden_size", 768))
    heads = int(_get(hf_config, "num_attention_heads", 12))
    if heads <= 0 or hidden % heads:
        raise DataError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    head_dim = _get(hf_config, "head_dim", None)
    if head_dim is not None and int(head_dim) != hidden // heads:
        raise DataError(f"head_dim must be hidden_size / num_attention_heads = "
                        f"{hidden // heads}, got {head_dim}")
    mel = int(_get(hf_config, "num_mel_bins", 128))
    max_length = int(_get(hf_config, "max_length", 1024))
    fe = {**_FE_DEFAULTS, **(feature_extractor or {})}
    if feature_extractor is not None:
        fe_type = feature_extractor.get("feature_extractor_type", "ASTFeatureExtractor")
        if fe_type != "ASTFeatureExtractor":
            raise DataError(f"feature_extractor_type must be 'ASTFeatureExtractor', got "
                            f"{fe_type!r}")
        for name, ours in (("num_mel_bins", mel), ("max_length", max_length)):
            if int(fe[name]) != ours:
                raise DataError(f"the feature extractor's {name} ({fe[name]}) differs from "
                                f"the model's ({ours})")
    if fe["do_normalize"]:
        mean, std = float(fe["mean"]), float(fe["std"])
    else:
        mean, std = 0.0, 0.5  # (x - 0) / (2 * 0.5) = x
    if num_classes is None:
        archs = _get(hf_config, "architectures", None) or []
        head = "ASTForAudioClassification" in archs
        num_classes = len(_get(hf_config, "id2label", None) or {}) if head else 0
    config = AstModelConfig(
        fbank=ast_fbank(sample_rate=int(fe["sampling_rate"]), num_mel_bins=mel),
        norm_mean=mean,
        norm_std=std,
        target_frames=max_length,
        specaugment=False,
        patch_size=(patch, patch),
        patch_stride=(int(_get(hf_config, "time_stride", 10)),
                      int(_get(hf_config, "frequency_stride", 10))),
        dim=hidden,
        num_layers=int(_get(hf_config, "num_hidden_layers", 12)),
        num_heads=heads,
        mlp_dim=int(_get(hf_config, "intermediate_size", 3072)),
        dropout=float(_get(hf_config, "hidden_dropout_prob", 0.0)),
        attn_dropout=float(_get(hf_config, "attention_probs_dropout_prob", 0.0)),
        layer_norm_eps=float(_get(hf_config, "layer_norm_eps", 1e-12)),
        distillation_token=True,
        pooling="cls_dist",
        num_classes=int(num_classes),
        head_dropout=0.0,
    )
    try:
        config.validate()
    except ValueError as e:
        raise DataError(str(e)) from e
    return config


def _check_exportable(config: AstModelConfig) -> None:
    config.validate()
    if not config.distillation_token or config.pooling != "cls_dist":
        raise DataError("HF's AST has a distillation token and pools the mean of the CLS and "
                        f"distillation tokens (pooling 'cls_dist'); this model has "
                        f"distillation_token={config.distillation_token}, "
                        f"pooling={config.pooling!r}")
    if config.patch_size[0] != config.patch_size[1]:
        raise DataError(f"HF's AST has square patches; patch_size is {config.patch_size}")
    fbank = ast_fbank(sample_rate=16000, num_mel_bins=config.fbank.num_mel_bins)
    if config.fbank != fbank:
        raise DataError("HF's ASTFeatureExtractor computes ast_fbank(16000, num_mel_bins) "
                        f"features; this model's fbank differs: {config.fbank}")


def hf_config_from_ast(config: AstModelConfig, labels: Sequence[str] | None = None):
    """The transformers ``ASTConfig`` computing what ``config``'s model computes.

    Args:
        config: the model's config.
        labels: class names in class order (``id2label``); None = ``"0"``, ``"1"``, ...
            Ignored without a head.

    Raises:
        DataError: the model cannot be written as an HF AST (see the module doc).
        ImportError: transformers is not installed.
    """
    _check_exportable(config)
    try:
        from transformers import ASTConfig
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("hf_config_from_ast needs transformers: pip install 'speechfm[hf]'"
                          ) from e
    kwargs: dict[str, Any] = {}
    if config.num_classes:
        names = [str(i) for i in range(config.num_classes)] if labels is None else list(labels)
        if len(names) != config.num_classes:
            raise DataError(f"{len(names)} labels for a model with {config.num_classes} classes")
        if len(set(names)) != len(names):
            raise DataError("labels must be unique (HF's label2id maps each to one class)")
        kwargs["id2label"] = {i: str(name) for i, name in enumerate(names)}
        kwargs["label2id"] = {str(name): i for i, name in enumerate(names)}
        kwargs["architectures"] = ["ASTForAudioClassification"]
    else:
        kwargs["architectures"] = ["ASTModel"]
    return ASTConfig(
        hidden_size=config.dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_dim,
        hidden_act="gelu",
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attn_dropout,
        layer_norm_eps=config.layer_norm_eps,
        patch_size=config.patch_size[0],
        qkv_bias=True,
        frequency_stride=config.patch_stride[1],
        time_stride=config.patch_stride[0],
        max_length=config.target_frames,
        num_mel_bins=config.fbank.num_mel_bins,
        **kwargs,
    )


def preprocessor_config(config: AstModelConfig) -> dict[str, Any]:
    """The preprocessor_config.json of the ``ASTFeatureExtractor`` feeding ``config``'s
    model (its ``num_mel_bins``, ``max_length``, ``mean``, ``std``, sampling rate)."""
    return {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "sampling_rate": config.fbank.sample_rate,
        "num_mel_bins": config.fbank.num_mel_bins,
        "max_length": config.target_frames,
        "padding_value": 0.0,
        "do_normalize": True,
        "mean": config.norm_mean,
        "std": config.norm_std,
        "return_attention_mask": False,
        "padding_side": "right",
    }


# ----------------------------------------------------------------------------- weights


def _hf_grid(config: AstModelConfig) -> tuple[int, int]:
    """(frequency, time) patch grid of HF's model (its ``get_shape``)."""
    pt, pf = config.grid
    return pf, pt


def state_dict_from_hf(sd: Mapping[str, torch.Tensor], config: AstModelConfig
                       ) -> dict[str, torch.Tensor]:
    """An HF AST state dict (``ASTModel`` or ``ASTForAudioClassification``; checkpoint or
    transformers-5 module names) -> the state dict of ``create_ast_model(config)``.

    Raises:
        DataError: missing, unexpected or mis-shaped tensors (named).
    """
    prefixed = any(k.startswith(HF_PREFIX) for k in sd)
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    top = {hf: ours for ours, hf in _TOP_NAMES.items()}
    head = {hf: ours for ours, hf in _HEAD_NAMES.items()}
    for key, value in sd.items():
        name = key
        if prefixed and key.startswith(HF_PREFIX):
            name = key[len(HF_PREFIX):]
        elif prefixed and not key.startswith("classifier."):
            unexpected.append(key)
            continue
        if name in top:
            out[top[name]] = value
        elif key in head:  # the head is never prefixed
            out[head[key]] = value
        elif (m := _HF_LAYER_RE.match(name)) and m.group(2) in _HF_TO_OURS_LAYER:
            out[f"encoder.blocks.{m.group(1)}.{_HF_TO_OURS_LAYER[m.group(2)]}.{m.group(3)}"] = value
        else:
            unexpected.append(key)
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    if extra and not config.num_classes and all(k.startswith("head.") for k in extra):
        raise DataError("the HF weights have a classifier (classifier.*) but the config has "
                        "num_classes 0")
    problems = []
    if missing:
        problems.append(f"missing: {_list(missing)}")
    if unexpected or extra:
        problems.append(f"unexpected HF tensors: {_list(sorted(unexpected) + extra)}")
    if problems:
        raise DataError("the HF AST weights do not match the config; " + "; ".join(problems))
    out["encoder.pos_embed"] = _pos_from_hf(out["encoder.pos_embed"], config)
    w = out["encoder.patch_embed.proj.weight"]
    if w.dim() != 4:
        raise DataError(f"embeddings.patch_embeddings.projection.weight must be 4-D, got "
                        f"{tuple(w.shape)}")
    out["encoder.patch_embed.proj.weight"] = w.transpose(2, 3).contiguous()
    shapes = [f"{k} {tuple(out[k].shape)} vs {expected[k]}" for k in sorted(out)
              if tuple(out[k].shape) != expected[k]]
    if shapes:
        raise DataError(f"HF AST tensors of the wrong shape (converted vs config): {_list(shapes)}")
    return {k: out[k] for k in expected}


def state_dict_to_hf(sd: Mapping[str, torch.Tensor], config: AstModelConfig, *,
                     layout: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_dict_from_hf`: a speechfm ``"ast"`` state dict -> HF names
    (``ASTForAudioClassification``'s with a head, ``ASTModel``'s without).

    Args:
        sd: ``AstModel.state_dict()`` (adapters must have been merged or removed).
        config: its config.
        layout: ``"checkpoint"`` (what ``save_pretrained`` writes and every transformers
            version reads) or ``"module"`` (transformers 5's in-memory module names).

    Raises:
        DataError: missing, unexpected or mis-shaped tensors; a model HF cannot represent.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    _check_exportable(config)
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {expected[k]}" for k in sorted(set(sd) & set(expected))
              if tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        raise DataError("the state dict does not match the config: "
                        f"missing {_list(missing)}; unexpected {_list(unexpected)}; "
                        f"shapes {_list(shapes)}")
    prefix = HF_PREFIX if config.num_classes else ""
    which = LAYOUTS.index(layout)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _TOP_NAMES:
            if key == "encoder.pos_embed":
                value = _pos_to_hf(value, config)
            elif key == "encoder.patch_embed.proj.weight":
                value = value.transpose(2, 3)
            out[prefix + _TOP_NAMES[key]] = value.contiguous()
        elif key in _HEAD_NAMES:
            out[_HEAD_NAMES[key]] = value
        else:
            m = re.match(r"^encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
            assert m is not None and m.group(2) in _LAYER_NAMES, key  # _expected_shapes
            hf = _LAYER_NAMES[m.group(2)][which]
            out[f"{prefix}{_LAYER_PREFIX[layout]}{m.group(1)}.{hf}.{m.group(3)}"] = value
    return out


def _pos_from_hf(pos: torch.Tensor, config: AstModelConfig) -> torch.Tensor:
    pf, pt = _hf_grid(config)
    if pos.dim() != 3 or pos.shape[:2] != (1, 2 + pf * pt):
        raise DataError(f"embeddings.position_embeddings has shape {tuple(pos.shape)}; the "
                        f"config's {pf} x {pt} (frequency x time) patch grid needs "
                        f"(1, {2 + pf * pt}, C)")
    c = pos.shape[-1]
    grid = pos[:, 2:].reshape(1, pf, pt, c).transpose(1, 2).reshape(1, pt * pf, c)
    return torch.cat((pos[:, :2], grid), dim=1).contiguous()


def _pos_to_hf(pos: torch.Tensor, config: AstModelConfig) -> torch.Tensor:
    pf, pt = _hf_grid(config)
    c = pos.shape[-1]
    grid = pos[:, 2:].reshape(1, pt, pf, c).transpose(1, 2).reshape(1, pf * pt, c)
    return torch.cat((pos[:, :2], grid), dim=1)


def _expected_shapes(config: AstModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``create_ast_model(config).state_dict()`` (without building it)."""
    c, m = config.dim, config.mlp_dim
    pt, pf = config.grid
    out: dict[str, tuple[int, ...]] = {
        "encoder.cls_token": (1, 1, c),
        "encoder.dist_token": (1, 1, c),
        "encoder.pos_embed": (1, 2 + pt * pf, c),
        "encoder.patch_embed.proj.weight": (c, 1, *config.patch_size),
        "encoder.patch_embed.proj.bias": (c,),
    }
    for i in range(config.num_layers):
        p = f"encoder.blocks.{i}."
        for name in ("attn_norm", "ffn_norm"):
            out[p + name + ".weight"] = (c,)
            out[p + name + ".bias"] = (c,)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{p}attn.{name}.weight"] = (c, c)
            out[f"{p}attn.{name}.bias"] = (c,)
        out[p + "ffn.linear1.weight"] = (m, c)
        out[p + "ffn.linear1.bias"] = (m,)
        out[p + "ffn.linear2.weight"] = (c, m)
        out[p + "ffn.linear2.bias"] = (c,)
    out["encoder.final_norm.weight"] = (c,)
    out["encoder.final_norm.bias"] = (c,)
    if config.num_classes:
        k = config.num_classes
        out.update({"head.0.weight": (c,), "head.0.bias": (c,), "head.1.weight": (k, c),
                    "head.1.bias": (k,)})
    return out


def _list(names: Sequence[str], limit: int = 6) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ----------------------------------------------------------------------------- directories


def read_hf_weights(src: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` directory: ``model.safetensors`` (or its
    sharded index), else ``pytorch_model.bin`` (or its index) through
    ``torch.load(weights_only=True)``; nothing is unpickled beyond tensors.

    Raises:
        DataError: no weights file, or an unreadable one.
    """
    from safetensors.torch import load_file

    src = Path(src)

    def load(file: Path) -> dict[str, torch.Tensor]:
        try:
            if file.suffix == ".safetensors":
                return load_file(str(file), device="cpu")
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors / torch raise their own types for bad files
            raise DataError(f"{file}: cannot read the weights ({e})") from e
        if not isinstance(state, Mapping):
            raise DataError(f"{file}: not a state dict")
        return dict(state)

    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (src / single).is_file():
            return load(src / single)
        if (src / index).is_file():
            weight_map = read_json_object(src / index).get("weight_map") or {}
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load(src / shard))
            return state
    raise DataError(f"{src}: no weights (model.safetensors or pytorch_model.bin, or their "
                    "sharded index)")


def _labels_from_hf(hf_config: Mapping[str, Any], num_classes: int, where: Path) -> list[str]:
    id2label = hf_config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{where}: id2label must map class ids to names ({e})") from e
    if not by_id:
        return [str(i) for i in range(num_classes)]
    if sorted(by_id) != list(range(num_classes)):
        raise DataError(f"{where}: id2label has ids {sorted(by_id)[:8]}... but the classifier "
                        f"has {num_classes} classes (ids 0..{num_classes - 1})")
    return [by_id[i] for i in range(num_classes)]


def convert_hf_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert a transformers AST directory (``save_pretrained`` of ``ASTModel`` or
    ``ASTForAudioClassification``) into an ``"ast"``-family speechfm model directory.

    Reads ``config.json``, the weights and, when present, ``preprocessor_config.json``
    (the feature extractor's mean/std/sample rate; else ``ASTFeatureExtractor``'s
    defaults).  A classifier (``classifier.*`` tensors) becomes the head, and
    ``id2label`` the ``labels`` part (a list in class order), so
    ``speechfm.load(dst).classify(audio)`` gives HF's scores.  ``dst`` is replaced if it
    exists; its config.json records ``"converted_from"``.  No transformers needed.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``src`` is unreadable or holds a model that cannot map exactly (the
            message names ``src`` and the field or tensors).
    """
    from speechfm.models.io import save_model_dir

    src = Path(src)
    hf_config = read_json_object(src / "config.json")
    fe_file = src / "preprocessor_config.json"
    fe = read_json_object(fe_file) if fe_file.is_file() else None
    state = read_hf_weights(src)
    head = "classifier.dense.weight" in state
    if not head and any(k.startswith("classifier.") for k in state):
        raise DataError(f"{src}: a classifier without classifier.dense (num_labels 0) has no "
                        "speechfm counterpart")
    num_classes = int(state["classifier.dense.weight"].shape[0]) if head else 0
    try:
        config = config_from_hf(hf_config, num_classes=num_classes, feature_extractor=fe)
        ours = state_dict_from_hf(state, config)
    except DataError as e:
        raise DataError(f"{src}: cannot convert this AST model: {e}") from e
    parts = {"labels": _labels_from_hf(hf_config, num_classes, src)} if head else {}
    extra = {
        "sample_rate": config.fbank.sample_rate,
        "converted_from": {
            "format": "transformers",
            "model_type": HF_MODEL_TYPE,
            "architectures": list(hf_config.get("architectures") or []),
            "path": str(src),
            "preprocessor_config": fe is not None,
        },
    }
    return save_model_dir(dst, ours, config, parts=parts, extra=extra)


def export_hf_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Export an ``"ast"``-family model directory as a transformers directory.

    Writes ``save_pretrained`` of ``ASTForAudioClassification`` (a model with a head;
    ``id2label``/``label2id`` from its ``labels`` part, else ``"0"``, ``"1"``, ...) or
    ``ASTModel`` (no head), plus ``preprocessor_config.json`` for ``ASTFeatureExtractor``
    with the model's ``num_mel_bins``, ``max_length``, ``mean`` and ``std``.  ``dst`` is
    replaced if it exists.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``src`` is not a loadable ``"ast"`` model directory, or holds a model
            HF cannot represent (named).
        ImportError: transformers is not installed.
    """
    from speechfm.models.io import load_model_dir, load_part

    try:
        from transformers import ASTForAudioClassification, ASTModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("exporting to transformers needs transformers: "
                          "pip install 'speechfm[hf]'") from e
    loaded = load_model_dir(src, tokenizer=False)
    config = loaded.config
    if not isinstance(config, AstModelConfig):
        raise DataError(f"{src}: a {loaded.family} model, not an 'ast' one")
    if hasattr(loaded.module.encoder, "adapter_names") and loaded.module.encoder.adapter_names():
        raise DataError(f"{src}: merge or remove its adapters before exporting (HF's AST "
                        "has none)")
    labels = load_part(loaded.directory, "labels", loaded.meta) if config.num_classes else None
    if isinstance(labels, Mapping):  # {id: name}
        labels = [labels[k] for k in sorted(labels, key=int)]
    try:
        hf_config = hf_config_from_ast(config, labels)
        hf_class = ASTForAudioClassification if config.num_classes else ASTModel
        hf_model = hf_class(hf_config).eval()
        names = set(hf_model.state_dict())
        sd = loaded.module.state_dict()
        for layout in LAYOUTS:
            hf_state = state_dict_to_hf(sd, config, layout=layout)
            if set(hf_state) == names:
                break
        else:
            raise DataError("this transformers version names AST's tensors neither way "
                            f"speechfm knows ({', '.join(LAYOUTS)}), e.g. {sorted(names)[:4]}")
    except DataError as e:
        raise DataError(f"{src}: cannot be written as a transformers AST: {e}") from e
    hf_model.load_state_dict(hf_state, strict=True)
    dst = Path(dst)
    tmp = dst.with_name(f".tmp-{dst.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    hf_model.save_pretrained(tmp)  # config.json + model.safetensors
    (tmp / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(config), indent=2) + "\n", encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    os.rename(tmp, dst)
    return dst


convert_from_hf_dir = convert_hf_dir
"""Alias: the name the conformer interop module uses."""
convert_to_hf_dir = export_hf_dir
"""Alias: what ``speechfm convert --to hf`` looks up in a family's interop module."""
