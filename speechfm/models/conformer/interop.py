"""Checkpoint interop between the Conformer encoder and transformers' ``Wav2Vec2BertModel``.

w2v-BERT 2.0 (``facebook/w2v-bert-2.0``) and its fine-tuned descendants are
``Wav2Vec2BertModel`` checkpoints.  The speechfm encoder computes the same function when
configured as :func:`conformer_config_from_hf` says: a ``"stack"`` front end (LayerNorm +
linear projection of stacked fbank frames), causal depthwise convolutions without biases,
a LayerNorm after the depthwise convolution, and Shaw ``relative_key`` (or Transformer-XL
``rel_pos``, or no) positions.  What the two cannot share raises ``ValueError`` naming
the field instead of converting into a different model.

HF's adapter (``add_adapter=True``: strided convolution + attention layers after the
encoder, with an optional projection to ``output_hidden_size``) and its intermediate FFN
(``use_intermediate_ffn_before_adapter=True``) become the encoder's length adapter
(:class:`~speechfm.models.conformer.config.LengthAdapterConfig`,
:mod:`speechfm.nn.length_adapter`): same function, and output lengths those of HF's
``_get_feat_extract_output_lengths``.  HF lets the padding of a batch leak into the last
valid frames' convolution windows (and, through the adapter's attention, into every frame
of a padded utterance); the length adapter zeroes it, so compare with HF per utterance
(or on batches of equal lengths).  Where ``adapter_kernel_size // 2 != adapter_stride //
2`` HF's lengths and its convolutions disagree; :mod:`speechfm.nn.length_adapter` says
what is computed then.  ``hidden_states`` / ``return_layers`` are
the encoder layers' outputs in both; ``last_hidden_state`` / ``out`` the adapter's.

Inputs differ only in packaging: HF takes ``input_features`` (N, T, 160) already stacked
by its feature extractor plus an ``attention_mask`` (N, T); the speechfm encoder takes the
(N, 2T, 80) fbank frames and ``x_lens = 2 * mask.sum(-1)`` and stacks them itself
(``input_dim=160`` in :func:`conformer_config_from_hf` gives a stride-1 encoder that takes
HF's stacked features as they are).

transformers is optional: only :func:`hf_config_from_conformer` and the directory
converters import it (lazily); the state-dict functions work on plain ``{name: tensor}``
mappings.

Whole directories (what ``speechfm convert`` calls): :func:`convert_from_hf_dir` turns a
``save_pretrained`` directory into an ``"encoder"``-family model directory (fbank and
normalisation settings included), :func:`convert_to_hf_dir` exports a model directory's
encoder as a ``Wav2Vec2BertModel``.

Tensor names (``i`` = layer)::

    feature_projection.layer_norm.*                 front_end.norm.*
    feature_projection.projection.*                 front_end.proj.*
    encoder.layers.i.ffn{1,2}_layer_norm.*          blocks.i.ffn{1,2}_norm.*
    encoder.layers.i.ffn{1,2}.intermediate_dense.*  blocks.i.ffn{1,2}.linear1.*
    encoder.layers.i.ffn{1,2}.output_dense.*        blocks.i.ffn{1,2}.linear2.*
    encoder.layers.i.self_attn_layer_norm.*         blocks.i.attn_norm.*
    encoder.layers.i.self_attn.linear_{q,k,v,out}.* blocks.i.attn.{q,k,v,out}_proj.*
    encoder.layers.i.self_attn.distance_embedding.* blocks.i.attn.distance_embedding.*
    encoder.layers.i.self_attn.linear_pos.*         blocks.i.attn.linear_pos.*
    encoder.layers.i.self_attn.pos_bias_{u,v}       blocks.i.attn.pos_bias_{u,v}
    encoder.layers.i.conv_module.layer_norm.*       blocks.i.conv_norm.*
    encoder.layers.i.conv_module.pointwise_conv1.*  blocks.i.conv.pointwise1.*  (Conv1d k=1 -> Linear)
    encoder.layers.i.conv_module.depthwise_conv.*   blocks.i.conv.depthwise.*
    encoder.layers.i.conv_module.depthwise_layer_norm.*  blocks.i.conv.norm.*
    encoder.layers.i.conv_module.pointwise_conv2.*  blocks.i.conv.pointwise2.*  (Conv1d k=1 -> Linear)
    encoder.layers.i.final_layer_norm.*             blocks.i.final_norm.*
    intermediate_ffn.intermediate_dense.*           length_adapter.intermediate_ffn.linear1.*
    intermediate_ffn.output_dense.*                 length_adapter.intermediate_ffn.linear2.*
    adapter.proj.*                                  length_adapter.proj.*
    adapter.proj_layer_norm.*                       length_adapter.proj_norm.*
    adapter.layers.i.residual_layer_norm.*          length_adapter.layers.i.residual_norm.*
    adapter.layers.i.residual_conv.*                length_adapter.layers.i.residual_conv.*
    adapter.layers.i.self_attn_layer_norm.*         length_adapter.layers.i.attn_norm.*
    adapter.layers.i.self_attn_conv.*               length_adapter.layers.i.attn_conv.*
    adapter.layers.i.self_attn.linear_{q,k,v,out}.* length_adapter.layers.i.attn.{q,k,v,out}_proj.*
    adapter.layers.i.ffn_layer_norm.*               length_adapter.layers.i.ffn_norm.*
    adapter.layers.i.ffn.intermediate_dense.*       length_adapter.layers.i.ffn.linear1.*
    adapter.layers.i.ffn.output_dense.*             length_adapter.layers.i.ffn.linear2.*

Skipped HF tensors (:data:`SKIPPED_HF_KEYS`): ``masked_spec_embed``, the learned vector
HF's training-time SpecAugment writes over masked frames (present when ``mask_time_prob``
or ``mask_feature_prob`` > 0; speechfm masks features in :mod:`speechfm.features`, not
inside the encoder), and any ``encoder.embed_positions.*`` buffer (sinusoid tables speechfm
computes on the fly).  :func:`load_hf_weights` returns the names it skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.models.conformer.config import ConformerConfig, LengthAdapterConfig
from speechfm.models.conformer.model import ConformerEncoder

__all__ = [
    "SKIPPED_HF_KEYS",
    "conformer_config_from_hf",
    "convert_from_hf_dir",
    "convert_to_hf_dir",
    "hf_config_from_conformer",
    "load_hf_weights",
    "seamless_m4t_fbank_config",
    "state_dict_from_hf",
    "state_dict_to_hf",
]

SKIPPED_HF_KEYS = ("masked_spec_embed",)
"""HF tensors (after the prefix) with no encoder counterpart, skipped by the conversion."""
_SKIPPED_HF_PREFIXES = ("encoder.embed_positions.",)

# HF position_embeddings_type <-> ConformerConfig.pos_type, where they compute the same.
_POS_FROM_HF = {"relative_key": "relative_key", "relative": "rel_pos", None: "none"}
_POS_TO_HF: dict[str, Any] = {v: k for k, v in _POS_FROM_HF.items()}

# HF adapter_act <-> LengthAdapterConfig.activation ("gelu_new" is the tanh approximation
# written out, equal to rounding; it comes back as "gelu_pytorch_tanh").
_ACT_FROM_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
}
_ACT_TO_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "silu": "swish",
    "tanh": "tanh",
}

_TOP_MODULES = {
    "feature_projection.layer_norm": "front_end.norm",
    "feature_projection.projection": "front_end.proj",
    "intermediate_ffn.intermediate_dense": "length_adapter.intermediate_ffn.linear1",
    "intermediate_ffn.output_dense": "length_adapter.intermediate_ffn.linear2",
    "adapter.proj": "length_adapter.proj",
    "adapter.proj_layer_norm": "length_adapter.proj_norm",
}
_LAYER_MODULES = {
    "ffn1_layer_norm": "ffn1_norm",
    "ffn1.intermediate_dense": "ffn1.linear1",
    "ffn1.output_dense": "ffn1.linear2",
    "self_attn_layer_norm": "attn_norm",
    "self_attn.linear_q": "attn.q_proj",
    "self_attn.linear_k": "attn.k_proj",
    "self_attn.linear_v": "attn.v_proj",
    "self_attn.linear_out": "attn.out_proj",
    "self_attn.linear_pos": "attn.linear_pos",
    "self_attn.distance_embedding": "attn.distance_embedding",
    "conv_module.layer_norm": "conv_norm",
    "conv_module.pointwise_conv1": "conv.pointwise1",
    "conv_module.depthwise_conv": "conv.depthwise",
    "conv_module.depthwise_layer_norm": "conv.norm",
    "conv_module.pointwise_conv2": "conv.pointwise2",
    "ffn2_layer_norm": "ffn2_norm",
    "ffn2.intermediate_dense": "ffn2.linear1",
    "ffn2.output_dense": "ffn2.linear2",
    "final_layer_norm": "final_norm",
}
# Parameters held directly by a module (no ".weight"/".bias" suffix).
_LAYER_PARAMS = {
    "self_attn.pos_bias_u": "attn.pos_bias_u",
    "self_attn.pos_bias_v": "attn.pos_bias_v",
}
# Modules of HF's adapter layer i -> our length adapter layer i.
_ADAPTER_LAYER_MODULES = {
    "residual_layer_norm": "residual_norm",
    "residual_conv": "residual_conv",
    "self_attn_layer_norm": "attn_norm",
    "self_attn_conv": "attn_conv",
    "self_attn.linear_q": "attn.q_proj",
    "self_attn.linear_k": "attn.k_proj",
    "self_attn.linear_v": "attn.v_proj",
    "self_attn.linear_out": "attn.out_proj",
    "ffn_layer_norm": "ffn_norm",
    "ffn.intermediate_dense": "ffn.linear1",
    "ffn.output_dense": "ffn.linear2",
}
# HF's 1x1 Conv1d weights (out, in, 1) are our Linear weights (out, in).
_POINTWISE = ("conv.pointwise1.weight", "conv.pointwise2.weight")


def _invert(table: Mapping[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


# Per-layer groups: (HF layer prefix, our layer prefix, HF -> our module names, HF -> our
# parameters held directly by a module).
_LAYER_GROUPS = (
    ("encoder.layers.", "blocks.", _LAYER_MODULES, _LAYER_PARAMS),
    ("adapter.layers.", "length_adapter.layers.", _ADAPTER_LAYER_MODULES, {}),
)
_Group = tuple[re.Pattern, str, Mapping[str, str], Mapping[str, str]]


def _groups(hf_to_ours: bool) -> tuple[_Group, ...]:
    out = []
    for hf, ours, modules, params in _LAYER_GROUPS:
        src, dst = (hf, ours) if hf_to_ours else (ours, hf)
        if not hf_to_ours:
            modules, params = _invert(modules), _invert(params)
        out.append((re.compile(re.escape(src) + r"(\d+)\.(.+)"), dst + "{}.", modules, params))
    return tuple(out)


_GROUPS_FROM_HF = _groups(True)
_GROUPS_TO_HF = _groups(False)
_TOP_MODULES_INV = _invert(_TOP_MODULES)


def _rename(name: str, top: Mapping[str, str], groups: tuple[_Group, ...]) -> str | None:
    """``name`` in the other naming scheme, or None if it has no counterpart."""
    for layer_re, layer_fmt, layer_modules, layer_params in groups:
        match = layer_re.fullmatch(name)
        if match is None:
            continue
        index, rest = match.groups()
        if rest in layer_params:
            return layer_fmt.format(index) + layer_params[rest]
        module, _, param = rest.rpartition(".")
        if module in layer_modules:
            return f"{layer_fmt.format(index)}{layer_modules[module]}.{param}"
        return None
    module, _, param = name.rpartition(".")
    return f"{top[module]}.{param}" if module in top else None


def _hf_to_ours_name(name: str) -> str | None:
    return _rename(name, _TOP_MODULES, _GROUPS_FROM_HF)


def _ours_to_hf_name(name: str) -> str | None:
    return _rename(name, _TOP_MODULES_INV, _GROUPS_TO_HF)


def _no_counterpart(key: str) -> ValueError:
    why = ""
    head, _, rest = key.partition(".")
    if rest and _hf_to_ours_name(rest) is not None:
        why = f" (a wrapped model? pass prefix={head + '.'!r})"
    return ValueError(f"HF tensor {key!r} has no speechfm counterpart{why}")


def _convert_from_hf(
    hf_state: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(our state, our name -> HF name, skipped HF names)."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    skipped: list[str] = []
    for key, value in hf_state.items():
        if not key.startswith(prefix):
            skipped.append(key)
            continue
        name = key[len(prefix) :]
        if name in SKIPPED_HF_KEYS or name.startswith(_SKIPPED_HF_PREFIXES):
            skipped.append(key)
            continue
        new = _hf_to_ours_name(name)
        if new is None:
            raise _no_counterpart(key)
        if new.endswith(_POINTWISE):
            if value.dim() != 3 or value.shape[-1] != 1:
                raise ValueError(
                    f"{key}: expected a kernel-1 Conv1d weight (out, in, 1), got "
                    f"{tuple(value.shape)}"
                )
            value = value.squeeze(-1)
        out[new] = value
        origin[new] = key
    return out, origin, skipped


def state_dict_from_hf(
    hf_state: Mapping[str, torch.Tensor], *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Rename a ``Wav2Vec2BertModel`` state dict to :class:`ConformerEncoder` names.

    Args:
        hf_state: HF tensor names -> tensors (e.g. ``model.state_dict()`` or a loaded
            ``model.safetensors``).
        prefix: the model's prefix inside a bigger checkpoint, e.g. ``"wav2vec2_bert."``
            for ``Wav2Vec2BertForCTC``; keys outside it (heads) are left out.

    Returns:
        Our names -> tensors (views of the inputs where no reshape is needed): the
        pointwise Conv1d weights (out, in, 1) become Linear weights (out, in).
        :data:`SKIPPED_HF_KEYS` are left out.

    Raises:
        ValueError: a tensor has no counterpart (e.g. a task head without ``prefix``) or a
            pointwise weight is not a kernel-1 Conv1d weight.
    """
    return _convert_from_hf(hf_state, prefix)[0]


def state_dict_to_hf(
    our_state: Mapping[str, torch.Tensor], *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_dict_from_hf`: our names -> ``Wav2Vec2BertModel`` names.

    Args:
        our_state: a :class:`ConformerEncoder` state dict (configured as
            :func:`hf_config_from_conformer` accepts).
        prefix: prepended to every HF name.

    Raises:
        ValueError: a tensor has no HF counterpart (a final norm, BatchNorm statistics,
            conv biases, PEFT adapters, another front end).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in our_state.items():
        new = _ours_to_hf_name(key)
        if new is None:
            raise ValueError(f"speechfm tensor {key!r} has no Wav2Vec2BertModel counterpart")
        if key.endswith(_POINTWISE):
            value = value.unsqueeze(-1)
        out[prefix + new] = value
    return out


def load_hf_weights(
    encoder: ConformerEncoder,
    hf_model_or_state: nn.Module | Mapping[str, torch.Tensor],
    *,
    prefix: str = "",
) -> list[str]:
    """Copy a ``Wav2Vec2BertModel``'s weights into an equal encoder, in place.

    Every encoder tensor must receive exactly one HF tensor of the same shape; anything
    else is an error, so a wrong configuration cannot load half a model.

    Args:
        encoder: built from (the equivalent of) :func:`conformer_config_from_hf` of the
            checkpoint's config.
        hf_model_or_state: a ``Wav2Vec2BertModel``, a model wrapping one as
            ``.wav2vec2_bert`` (``Wav2Vec2BertForCTC`` etc.; its heads are not read), or
            a state dict.
        prefix: for a state dict, the model's prefix in it (see :func:`state_dict_from_hf`).

    Returns:
        The HF names that were skipped on purpose: :data:`SKIPPED_HF_KEYS` (e.g.
        ``masked_spec_embed``) and keys outside ``prefix``.

    Raises:
        ValueError: an HF tensor without counterpart, a shape mismatch, or encoder tensors
            left without an HF counterpart.
    """
    if isinstance(hf_model_or_state, nn.Module):
        inner = getattr(hf_model_or_state, "wav2vec2_bert", None)
        module = inner if isinstance(inner, nn.Module) else hf_model_or_state
        hf_state: Mapping[str, torch.Tensor] = module.state_dict()
    else:
        hf_state = hf_model_or_state
    converted, origin, skipped = _convert_from_hf(hf_state, prefix)
    target = encoder.state_dict()
    for name, value in converted.items():
        if name not in target:
            raise ValueError(
                f"HF tensor {origin[name]!r} has no counterpart ({name}) in this encoder; "
                "is it configured as conformer_config_from_hf says?"
            )
        if value.shape != target[name].shape:
            raise ValueError(
                f"{origin[name]} -> {name}: shape {tuple(value.shape)} != "
                f"{tuple(target[name].shape)}"
            )
    missing = sorted(set(target) - set(converted))
    if missing:
        raise ValueError(f"speechfm tensors without an HF counterpart: {missing}")
    encoder.load_state_dict(converted)
    return skipped


# ----------------------------------------------------------------------------- configs


def _hf_get(hf_config: Any, name: str, default: Any) -> Any:
    return getattr(hf_config, name, default)


def conformer_config_from_hf(hf_config: Any, *, input_dim: int = 80) -> ConformerConfig:
    """The :class:`ConformerConfig` computing what a ``Wav2Vec2BertModel`` computes.

    Args:
        hf_config: a transformers ``Wav2Vec2BertConfig`` (or any object with its fields).
        input_dim: fbank bins per input frame of the speechfm encoder; the stacking stride
            is ``feature_projection_input_dim // input_dim`` (w2v-BERT 2.0: 160 // 80 = 2,
            so the encoder takes 80-dim fbank at 100 Hz).  ``input_dim=160`` gives stride 1,
            an encoder that takes HF's stacked ``input_features`` as they are.

    Dropouts only matter in training and do not map one to one: speechfm has one
    ``dropout`` (front-end output, inside the FFNs, every sub-module output), set to the
    largest of HF's ``hidden_dropout``, ``activation_dropout``, ``conformer_conv_dropout``
    and ``feat_proj_dropout``; ``attn_dropout`` is HF's ``attention_dropout``;
    ``layer_drop`` is HF's ``layerdrop`` (per sample here, per batch there).  HF's
    training-time SpecAugment settings (``mask_time_*``, ``mask_feature_*``) and task-head
    settings (``vocab_size``, ``final_dropout``, ``classifier_*``, ``tdnn_*``...) have no
    encoder counterpart and are ignored.

    ``add_adapter=True`` gives a ``length_adapter`` (:class:`LengthAdapterConfig`):
    ``num_adapter_layers``, ``adapter_kernel_size``, ``adapter_stride``, ``adapter_act``,
    ``output_hidden_size`` (None there when equal to ``hidden_size``: no projection) and
    ``use_intermediate_ffn_before_adapter``; its attention shares ``num_attention_heads``,
    its FFNs ``intermediate_size``, as in HF.  An intermediate FFN without adapter layers
    (which HF's config refuses, but its model computes) is a length adapter of 0 layers.
    HF's ``layerdrop`` also skips whole adapter layers in training; speechfm's
    ``layer_drop`` only skips blocks.

    Raises:
        ValueError: naming the HF field the encoder cannot represent: ``hidden_act`` other
            than swish/silu, ``position_embeddings_type="rotary"`` (HF rotates the layer
            *input* before the q/k projections, speechfm the projected queries and keys),
            a ``feature_projection_input_dim`` not a multiple of ``input_dim``, an
            ``adapter_act`` other than relu/gelu/gelu_pytorch_tanh/gelu_new/swish/silu/tanh,
            or an ``output_hidden_size`` not divisible by ``num_attention_heads``.
    """
    act = _hf_get(hf_config, "hidden_act", "swish")
    if act not in ("swish", "silu"):
        raise ValueError(f"hidden_act must be 'swish' or 'silu' (speechfm uses SiLU), got {act!r}")
    pos = _hf_get(hf_config, "position_embeddings_type", "relative_key")
    if pos not in _POS_FROM_HF:
        raise ValueError(
            f"position_embeddings_type={pos!r} cannot be converted: speechfm supports "
            f"{sorted(k for k in _POS_FROM_HF if k)} and None"
            + (
                " (HF's rotary rotates the layer input before the q/k projections; speechfm's "
                "rotates the projected queries and keys)"
                if pos == "rotary"
                else ""
            )
        )
    feat = int(_hf_get(hf_config, "feature_projection_input_dim", 160))
    if input_dim <= 0 or feat % input_dim:
        raise ValueError(
            f"feature_projection_input_dim {feat} is not a multiple of input_dim {input_dim}"
        )
    length_adapter = _length_adapter_from_hf(hf_config)
    dropout = max(
        float(_hf_get(hf_config, name, 0.0))
        for name in (
            "hidden_dropout",
            "activation_dropout",
            "conformer_conv_dropout",
            "feat_proj_dropout",
        )
    )
    config = ConformerConfig(
        input_dim=input_dim,
        front_end="stack",
        subsampling_factor=feat // input_dim,
        stack_mode="floor",  # HF's feature extractor drops a trailing odd frame
        dim=int(hf_config.hidden_size),
        num_layers=int(hf_config.num_hidden_layers),
        num_heads=int(hf_config.num_attention_heads),
        ffn_dim=int(hf_config.intermediate_size),
        conv_kernel=int(_hf_get(hf_config, "conv_depthwise_kernel_size", 31)),
        conv_causal=True,  # HF pads the depthwise conv on the left only
        conv_norm="layer_norm",
        conv_bias=False,  # HF's three conv-module convolutions have no bias
        pos_type=_POS_FROM_HF[pos],
        rel_left_max=int(_hf_get(hf_config, "left_max_position_embeddings", 64)),
        rel_right_max=int(_hf_get(hf_config, "right_max_position_embeddings", 8)),
        dropout=dropout,
        attn_dropout=float(_hf_get(hf_config, "attention_dropout", 0.0)),
        layer_drop=float(_hf_get(hf_config, "layerdrop", 0.0)),
        final_norm=False,  # each block already ends in a LayerNorm, as in HF
        layer_norm_eps=float(_hf_get(hf_config, "layer_norm_eps", 1e-5)),
        length_adapter=length_adapter,
    )
    config.validate()
    return config


def _length_adapter_from_hf(hf_config: Any) -> LengthAdapterConfig | None:
    add = bool(_hf_get(hf_config, "add_adapter", False))
    ffn = bool(_hf_get(hf_config, "use_intermediate_ffn_before_adapter", False))
    if not add and not ffn:
        return None
    act = _hf_get(hf_config, "adapter_act", "relu")
    if add and (not isinstance(act, str) or act not in _ACT_FROM_HF):
        raise ValueError(
            f"adapter_act must be one of {sorted(_ACT_FROM_HF)} to convert, got {act!r}"
        )
    hidden = int(hf_config.hidden_size)
    out = _hf_get(hf_config, "output_hidden_size", None) or hidden
    if not add:
        # HF builds and runs the intermediate FFN whatever add_adapter says.
        return LengthAdapterConfig(num_layers=0, intermediate_ffn=True)
    heads = int(hf_config.num_attention_heads)
    if int(out) % heads:
        raise ValueError(
            f"output_hidden_size {out} is not divisible by num_attention_heads {heads} (the "
            "adapter's attention heads)"
        )
    return LengthAdapterConfig(
        num_layers=int(_hf_get(hf_config, "num_adapter_layers", 1)),
        kernel_size=int(_hf_get(hf_config, "adapter_kernel_size", 3)),
        stride=int(_hf_get(hf_config, "adapter_stride", 2)),
        output_dim=None if int(out) == hidden else int(out),
        activation=_ACT_FROM_HF[act],
        intermediate_ffn=ffn,
    )


def hf_config_from_conformer(config: ConformerConfig):
    """The transformers ``Wav2Vec2BertConfig`` computing what ``config``'s encoder computes.

    Inverse of :func:`conformer_config_from_hf` (with its ``input_dim``): fields without an
    HF counterpart that do not change the function (``front_end_channels``, ``patch_*``,
    ``rotary_base``, ``dynamic_chunk_max`` and the like, ``gradient_checkpointing``) come
    back at their defaults.  Dropouts map as described there; SpecAugment masking is off
    (``mask_time_prob=0``), so the HF model has no ``masked_spec_embed``.  A
    ``length_adapter`` becomes HF's adapter (``add_adapter=True``, also with 0 layers) and
    intermediate FFN.

    Raises:
        ImportError: transformers is not installed.
        ValueError: naming the field HF cannot represent: ``front_end`` other than
            "stack", ``stack_mode="ceil"``, ``pos_type`` "rotary" or "abs", ``conv_causal``
            False, ``conv_bias`` True, ``conv_norm="batch_norm"``, ``final_norm`` True,
            ``chunk_size``/``left_context`` other than -1, ``dynamic_chunk`` True.
    """
    config.validate()
    if config.front_end != "stack":
        raise ValueError(
            f"front_end must be 'stack' (HF's feature projection), got {config.front_end!r}"
        )
    if config.stack_mode != "floor":
        raise ValueError(
            f"stack_mode must be 'floor' (HF's feature extractor), got {config.stack_mode!r}"
        )
    if config.pos_type not in _POS_TO_HF:
        raise ValueError(
            f"pos_type must be one of {sorted(_POS_TO_HF)} for HF, got {config.pos_type!r}"
        )
    checks = (
        ("conv_causal", True, "HF's depthwise convolution is causal"),
        ("conv_bias", False, "HF's convolution module has no biases"),
        ("conv_norm", "layer_norm", "HF normalises the depthwise output with a LayerNorm"),
        ("final_norm", False, "HF has no LayerNorm after the last block"),
        ("chunk_size", -1, "HF attends over the full context"),
        ("left_context", -1, "HF attends over the full context"),
        ("dynamic_chunk", False, "HF trains with full context"),
    )
    for name, wanted, why in checks:
        if getattr(config, name) != wanted:
            raise ValueError(f"{name} must be {wanted!r} ({why}), got {getattr(config, name)!r}")
    try:
        from transformers import Wav2Vec2BertConfig
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hf_config_from_conformer needs transformers: pip install 'speechfm[hf]'"
        ) from e

    return Wav2Vec2BertConfig(
        hidden_size=config.dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.ffn_dim,
        feature_projection_input_dim=config.input_dim * config.subsampling_factor,
        hidden_act="swish",
        conv_depthwise_kernel_size=config.conv_kernel,
        position_embeddings_type=_POS_TO_HF[config.pos_type],
        left_max_position_embeddings=config.rel_left_max,
        right_max_position_embeddings=config.rel_right_max,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout=config.dropout,
        activation_dropout=config.dropout,
        conformer_conv_dropout=config.dropout,
        feat_proj_dropout=config.dropout,
        attention_dropout=config.attn_dropout,
        layerdrop=config.layer_drop,
        apply_spec_augment=False,
        mask_time_prob=0.0,  # else the model owns a masked_spec_embed vector
        mask_feature_prob=0.0,
        **_length_adapter_to_hf(config),
    )


def _length_adapter_to_hf(config: ConformerConfig) -> dict[str, Any]:
    la = config.length_adapter
    if la is None:
        return {"add_adapter": False, "use_intermediate_ffn_before_adapter": False}
    return {
        "add_adapter": True,
        "num_adapter_layers": la.num_layers,
        "adapter_kernel_size": la.kernel_size,
        "adapter_stride": la.stride,
        "adapter_act": _ACT_TO_HF[la.activation],
        "output_hidden_size": la.out_dim(config.dim),
        "use_intermediate_ffn_before_adapter": la.intermediate_ffn,
    }


# ----------------------------------------------------------------------------- directories


def seamless_m4t_fbank_config():
    """The :class:`~speechfm.features.fbank.FbankConfig` of transformers'
    ``SeamlessM4TFeatureExtractor`` (w2v-BERT 2.0's front end): the waveform scaled by
    32768 (the int16 range), 80 Kaldi mel bins at 16 kHz from 25 ms povey windows every
    10 ms (FFT 512), DC offset removed, pre-emphasis 0.97, no dither, power spectrum,
    natural log floored at float32 epsilon, mel filters from 20 Hz to nyquist, and only
    whole frames (``center=False``: ``snip_edges=True``).  SeamlessM4T computes in float64
    (numpy), so :class:`~speechfm.features.fbank.TorchFbank` does too
    (``compute_dtype="float64"``): in float32 the FFT's rounding noise swamps deep bins
    (e.g. the empty 4-8 kHz band of upsampled 8 kHz audio), which per-bin normalisation
    then magnifies.  The per-mel-bin normalisation is the encoder's
    (:func:`convert_from_hf_dir`), not part of this config.
    """
    from speechfm.features.fbank import FbankConfig

    return FbankConfig(
        sample_rate=16000,
        num_mel_bins=80,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        dither=0.0,
        preemph_coeff=0.97,
        remove_dc_offset=True,
        window_type="povey",
        round_to_power_of_two=True,
        snip_edges=True,
        low_freq=20.0,
        high_freq=0.0,
        use_energy=False,
        use_power=True,
        use_log_fbank=True,
        waveform_scale=32768.0,
        compute_dtype="float64",
    )


def convert_from_hf_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert a transformers ``Wav2Vec2BertModel`` directory into a speechfm model directory.

    ``src`` is what ``save_pretrained`` writes (config.json + weights); only local files
    are read (``local_files_only=True``), so nothing is downloaded.  A checkpoint with a
    task head (``Wav2Vec2BertForCTC`` and the like) converts to its encoder alone: the head
    is dropped.  ``dst`` becomes an ``"encoder"``-family model directory
    (``speechfm.load(dst).embed(audio)``, or ``init_from`` for a CTC/transducer recipe),
    replaced if it exists; its config.json records ``"converted_from"``.

    What is identical: the Conformer (:func:`conformer_config_from_hf`, weights through
    :func:`state_dict_from_hf`) computes HF's hidden states, layer by layer, from the same
    features: (N, 2T, 80) frames here, HF's (N, T, 160) stacked ``input_features`` there.
    HF's ``masked_spec_embed`` (training-time masking) is not kept (``"skipped"`` in
    ``"converted_from"``).

    The front end is ``SeamlessM4TFeatureExtractor``'s too: the model computes its
    features with :func:`seamless_m4t_fbank_config` (waveform x 32768, Kaldi fbank in
    float64) and normalises every mel bin over the utterance's valid frames with the
    unbiased variance and eps 1e-7 (``utterance_norm_ddof=1``, ``utterance_norm_eps=1e-7``,
    as SeamlessM4T), then its ``"stack"`` front end stacks frame pairs, dropping an odd
    last frame (SeamlessM4T pads it to a pair that its ``attention_mask`` excludes, so
    HF's outputs on the valid frames are these).  On real audio (tests/unit/models/
    test_seamless_parity.py) the stacked, normalised features agree with the extractor's
    ``input_features`` to ~5e-6 and the layer outputs of ``speechfm.load(dst).embed``
    with HF's hidden states to float32 rounding.  HF's adapter and intermediate FFN
    (``add_adapter=True``) become the encoder's length adapter: the model's output
    (``embed`` returns the blocks' layers) is then the adapter's, at HF's lengths.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``src`` cannot be read by transformers, or holds a model the encoder
            cannot represent (the message names the HF field).
        ImportError: transformers is not installed.
    """
    from speechfm.errors import DataError
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig
    from speechfm.models.encoder import EncoderModelConfig
    from speechfm.models.io import save_model_dir

    try:
        from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("converting a transformers checkpoint needs transformers: "
                          "pip install 'speechfm[hf]'") from e
    src = Path(src)
    try:
        hf_config = Wav2Vec2BertConfig.from_pretrained(src, local_files_only=True)
        conformer = conformer_config_from_hf(hf_config)
    except (OSError, ValueError) as e:
        raise DataError(f"{src}: cannot convert this Wav2Vec2BertModel: {e}") from e
    try:
        hf_model, info = Wav2Vec2BertModel.from_pretrained(
            src, config=hf_config, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise DataError(f"{src}: transformers cannot load the weights: {e}") from e
    # transformers only warns about (and randomly initialises) weights missing from the
    # files; a converted model must not contain any.
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in SKIPPED_HF_KEYS)
    if missing:
        raise DataError(f"{src}: the weights files lack {len(missing)} tensors of the "
                        f"Wav2Vec2BertModel its config.json describes, e.g. {missing[:5]}")
    hf_state = hf_model.state_dict()
    try:
        ours, _, skipped = _convert_from_hf(hf_state, "")
    except ValueError as e:
        raise DataError(f"{src}: {e}") from e
    config = EncoderModelConfig(
        encoder=SpeechEncoderConfig(
            fbank=seamless_m4t_fbank_config(),
            normalization="utterance",  # SeamlessM4T normalises every mel bin per utterance
            utterance_norm_ddof=1,  # with numpy's var(ddof=1)
            utterance_norm_eps=1e-7,  # and sqrt(var + 1e-7)
            specaugment=False,
            conformer=conformer,
        )
    )
    state = {f"encoder.conformer.{k}": v for k, v in ours.items()}
    extra = {
        "converted_from": {
            "format": "transformers",
            "model_type": hf_config.model_type,
            "architectures": list(getattr(hf_config, "architectures", None) or []),
            "path": str(src),
            "skipped": skipped,
        }
    }
    return save_model_dir(dst, state, config, extra=extra)


def convert_to_hf_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Export the encoder of a speechfm model directory as a transformers ``Wav2Vec2BertModel``.

    Any family built on the shared front end converts (encoder-only, CTC, transducer), but
    only the encoder's Conformer is exported: task heads (CTC projection, transducer
    predictor/joiner), the feature settings and global CMVN statistics are not (HF's model
    takes features already computed and normalised by its feature extractor).  ``dst`` is
    written with ``save_pretrained`` (config.json + model.safetensors), replaced if it
    exists; load it with ``Wav2Vec2BertModel.from_pretrained(dst)``.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``src`` is not a loadable model directory, its model has no Conformer
            encoder, or the encoder is one HF cannot represent (the message names the
            field, e.g. a ``conv2d`` front end or non-causal convolutions).
        ImportError: transformers is not installed.
    """
    import shutil

    from speechfm.errors import DataError
    from speechfm.models.io import load_model_dir

    try:
        from transformers import Wav2Vec2BertModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("exporting to transformers needs transformers: "
                          "pip install 'speechfm[hf]'") from e
    loaded = load_model_dir(src, tokenizer=False)
    encoder = getattr(loaded.module, "encoder", None)
    conformer = getattr(encoder, "conformer", None)
    conformer_config = getattr(getattr(loaded.config, "encoder", None), "conformer", None)
    if not isinstance(conformer, ConformerEncoder) or not isinstance(conformer_config,
                                                                     ConformerConfig):
        raise DataError(f"{src}: this {loaded.family} model has no Conformer encoder "
                        "(model.encoder.conformer) to export")
    try:
        hf_config = hf_config_from_conformer(conformer_config)
        hf_state = state_dict_to_hf(conformer.state_dict())
    except ValueError as e:
        raise DataError(f"{src}: its encoder cannot be written as a Wav2Vec2BertModel: {e}") from e
    hf_model = Wav2Vec2BertModel(hf_config).eval()
    # hf_config_from_conformer turns SpecAugment masking off, so the model has no
    # masked_spec_embed and the two state dicts must match key for key.
    hf_model.load_state_dict(hf_state, strict=True)
    dst = Path(dst)
    tmp = dst.with_name(f".tmp-{dst.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    hf_model.save_pretrained(tmp)  # config.json + model.safetensors
    if dst.exists():
        shutil.rmtree(dst)
    os.rename(tmp, dst)
    return dst
