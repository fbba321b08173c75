"""``export_onnx``: a speechfm model directory -> ONNX files that sherpa-onnx runs.

What is written (sherpa-onnx's file layout, icefall's graph conventions):

- **CTC** models -> ``model.onnx`` + ``tokens.txt``: sherpa-onnx's offline
  ``zipformer2_ctc`` model type (``OfflineRecognizer`` with ``zipformer_ctc.model``):
  ``x`` (N, T, F) fbank frames, ``x_lens`` (N,) -> ``log_probs`` (N, T', V),
  ``log_probs_len`` (N,).
- **Streaming transducers** (causal convolutions, a front end without padding in time;
  a cascaded transducer's first pass) -> ``encoder.onnx`` / ``decoder.onnx`` /
  ``joiner.onnx`` + ``tokens.txt``: the online ``conformer`` model type
  (``OnlineRecognizer.from_transducer``). The encoder takes one chunk of raw frames and
  icefall's streaming-Conformer states (:class:`~speechfm.export.modules.StreamingEncoder`);
  its metadata carries ``model_type=conformer``, ``num_encoder_layers``, ``T``,
  ``decode_chunk_len``, ``left_context``, ``encoder_dim``, ``pad_length`` and
  ``cnn_module_kernel``, which size the states sherpa-onnx allocates.
- **Other transducers** (full-context encoders; a cascade's final pass with
  ``mode="offline"``) -> the same three files as the offline ``transducer`` type
  (``OfflineRecognizer.from_transducer``): ``x``, ``x_lens`` -> ``encoder_out``,
  ``encoder_out_lens``.

Transducer graphs follow icefall's export: the encoder output is already projected by
the joiner's ``encoder_proj``, the decoder (``y`` (N, context_size) -> ``decoder_out``
(N, J)) includes ``decoder_proj`` and carries ``vocab_size`` / ``context_size`` metadata,
and the joiner maps (N, J) + (N, J) to (N, V) logits. Feature normalisation (global CMVN
or per-utterance statistics) is inside the encoder graphs: sherpa-onnx feeds plain fbank
frames, computed with the options :func:`~speechfm.export.sherpa.sherpa_feature_config`
derives from the model's fbank settings (the export refuses settings it cannot match).

``int8=True`` also writes ``*.int8.onnx`` beside each file (onnxruntime's dynamic
quantisation of the MatMul weights, as icefall's exports do). ``export.json`` describes
the export (the dict :func:`export_onnx` returns).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechfm.export.sherpa import EXPORT_JSON, ExportError, sherpa_feature_config

__all__ = ["DEFAULT_LEFT_CONTEXT", "MODES", "OPSET", "export_onnx", "write_tokens"]

log = logging.getLogger("speechfm.export")

OPSET = 17
"""ONNX opset of the graphs (onnxruntime >= 1.14 and every sherpa-onnx release since
2023 run it)."""
MODES = ("auto", "online", "offline")
DEFAULT_LEFT_CONTEXT = 64
"""Cached encoder frames of a streaming export when neither the caller nor the model's
config fixes a finite left context (sherpa-onnx's states have a fixed size)."""


def write_tokens(tokenizer: Any, path: Path) -> None:
    """``tokens.txt``: ``symbol id`` per line, id 0 the blank ``<blk>`` (sherpa-onnx's CTC
    decoders look the blank up by that name; a leading ``▁`` reads as a space)."""
    lines = []
    for i, token in enumerate(tokenizer.tokens):
        if not token or any(c.isspace() for c in token):
            raise ExportError(f"token {i} ({token!r}) is empty or holds whitespace, which "
                              "tokens.txt cannot represent")
        lines.append(f"{token} {i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _require(*modules: str) -> None:
    """Raise :class:`ExportError` naming the export extra when a module is missing."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"the ONNX export needs {', '.join(missing)}: install the export "
                          "extra (pip install 'speechfm[export]')")


def _streaming_problem(model: Any) -> str | None:
    """Why ``model``'s (first) encoder cannot run as sherpa-onnx's streaming Conformer, or
    None."""
    encoder = model.encoder
    conformer = encoder.conformer
    if encoder.normalization == "utterance":
        return "it normalises features per utterance (the statistics need the whole input)"
    if conformer.length_adapter is not None:
        return "its encoder ends in a length adapter"
    if not getattr(conformer.front_end, "streamable", False):
        return f"its front end ({type(conformer.front_end).__name__}) pads in time"
    if not all(block.conv.causal for block in conformer.blocks):
        return "its convolutions are not causal (conv_causal: false)"
    if conformer.blocks[0].attn.pos_type == "rotary":
        return "rotary positions are not supported by the streaming export"
    return None


def _onnx_export(module: nn.Module, args: tuple, path: Path, *, inputs: list[str],
                 outputs: list[str], dynamic: dict[str, dict[int, str]], opset: int) -> None:
    """TorchScript-trace ``module`` on ``args`` into ``path`` (the tracer keeps the sizes
    the graph reads from its inputs symbolic; see ``export_friendly_ops``)."""
    from speechfm.export.modules import export_friendly_ops

    with warnings.catch_warnings(), export_friendly_ops(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape-dependent Python
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True, dynamo=False)


def _add_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    old = {p.key for p in model.metadata_props}
    for key, value in meta.items():
        if key in old:
            raise ValueError(f"{path}: metadata {key} already set")
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    onnx.save(model, str(path))


def _quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights (icefall's choice: onnxruntime's
    CPU kernels have no int8 ConvInteger); the metadata is kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice to pre-process, on the root logger
    try:
        quantize_dynamic(model_input=str(src), model_output=str(dst),
                         op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(disabled)


def _example_frames(model: Any, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of 2 to trace the offline graphs on: long enough for several
    attention chunks, the second row shorter so that the padding masks are traced."""
    front_end = model.encoder.conformer.front_end
    stride = int(getattr(front_end, "time_stride", 4))
    frames = max(200, stride * (max(chunk_size, 0) + 8) + int(front_end.receptive_field))
    x = torch.randn(2, frames, model.encoder.feature_dim)
    return x, torch.tensor([frames, frames - 3 * stride - 1], dtype=torch.int64)


def _export_offline_encoder(model: Any, head: nn.Module, path: Path, *, ctc: bool,
                            final_pass: bool, chunk_size: int, left_context: int,
                            opset: int) -> None:
    from speechfm.export.modules import OfflineEncoder

    wrapper = OfflineEncoder(model, head, log_softmax=ctc, final_pass=final_pass,
                             chunk_size=chunk_size, left_context=left_context)
    names = ("log_probs", "log_probs_len") if ctc else ("encoder_out", "encoder_out_lens")
    _onnx_export(wrapper, _example_frames(model, chunk_size), path, inputs=["x", "x_lens"],
                 outputs=list(names), opset=opset,
                 dynamic={"x": {0: "N", 1: "T"}, "x_lens": {0: "N"},
                          names[0]: {0: "N", 1: "T_out"}, names[1]: {0: "N"}})


def _export_decoder_joiner(model: Any, out: Path, opset: int) -> dict[str, str]:
    from speechfm.export.modules import TransducerDecoder, TransducerJoiner

    joiner_dim = model.joiner.output_linear.in_features
    _onnx_export(TransducerDecoder(model),
                 (torch.zeros(2, model.context_size, dtype=torch.int64),), out / "decoder.onnx",
                 inputs=["y"], outputs=["decoder_out"], opset=opset,
                 dynamic={"y": {0: "N"}, "decoder_out": {0: "N"}})
    _add_metadata(out / "decoder.onnx", {"vocab_size": model.vocab_size,
                                         "context_size": model.context_size,
                                         "blank_id": model.blank_id})
    _onnx_export(TransducerJoiner(model), (torch.randn(2, joiner_dim), torch.randn(2, joiner_dim)),
                 out / "joiner.onnx", inputs=["encoder_out", "decoder_out"], outputs=["logit"],
                 opset=opset, dynamic={"encoder_out": {0: "N"}, "decoder_out": {0: "N"},
                                       "logit": {0: "N"}})
    _add_metadata(out / "joiner.onnx", {"joiner_dim": joiner_dim, "vocab_size": model.vocab_size})
    return {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joiner": "joiner.onnx"}


def _export_streaming_encoder(model: Any, path: Path, *, chunk_size: int,
                              left_context: int, opset: int) -> dict[str, Any]:
    from speechfm.export.modules import StreamingEncoder

    enc = StreamingEncoder(model.encoder, model.joiner.encoder_proj, chunk_size=chunk_size,
                           left_context=left_context)
    attn, cnn = enc.init_states(2)
    x = torch.randn(2, enc.frames_per_call, model.encoder.feature_dim)
    # Two streams at different points, one still inside its first left context.
    processed = torch.tensor([0, enc.frames_shift * (left_context // chunk_size + 2)])
    states = {"attn_cache": {2: "N"}, "cnn_cache": {2: "N"}}
    _onnx_export(enc, (x, attn, cnn, processed), path,
                 inputs=["x", "attn_cache", "cnn_cache", "processed_lens"],
                 outputs=["encoder_out", "next_attn_cache", "next_cnn_cache"], opset=opset,
                 dynamic={"x": {0: "N"}, "processed_lens": {0: "N"}, "encoder_out": {0: "N"},
                          **states, **{f"next_{k}": v for k, v in states.items()}})
    meta = {
        "model_type": "conformer",
        "num_encoder_layers": enc.num_layers,
        "T": enc.frames_per_call,
        "decode_chunk_len": enc.frames_shift,
        "left_context": left_context,
        "encoder_dim": enc.dim,
        "pad_length": enc.frames_per_call - enc.frames_shift,
        "cnn_module_kernel": enc.kernel,
        "chunk_size": chunk_size,
        "subsampling_factor": enc.stride,
    }
    _add_metadata(path, meta)
    return meta


_CTC_HEAD = "ctc"  # ModelFamily.asr_head of a CTC model (speechfm/models/io.py)


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                mode: str = "auto", int8: bool = False, chunk_size: int | None = None,
                left_context: int | None = None, opset: int = OPSET) -> dict[str, Any]:
    """Export a CTC or transducer model directory for sherpa-onnx.

    Args:
        model_dir: a speechfm model directory (or a checkpoint root) with a tokenizer.
        out_dir: where the files go (created; existing files of the same names are
            replaced).
        mode: "online" (a streaming transducer), "offline", or "auto": online for a
            transducer whose encoder can stream, offline otherwise (CTC: always offline).
        int8: also write dynamically quantised ``*.int8.onnx`` files.
        chunk_size: attention chunk in encoder frames. Online: frames per encoder call
            (default: the model's chunk, else ``speechfm.api.DEFAULT_STREAM_CHUNK``);
            offline: chunked attention as in training (default: the model's, -1 = full).
        left_context: cached encoder frames (online: > 0, default the model's finite left
            context, else :data:`DEFAULT_LEFT_CONTEXT`; offline: default the model's).
        opset: ONNX opset.

    Returns:
        The export's description (also written to ``out_dir/export.json``): ``kind``
        ("offline_ctc", "online_transducer" or "offline_transducer"),
        ``sherpa_model_type``, ``files`` and ``int8_files`` (role -> file name in
        ``out_dir``), ``feature_config`` (``sherpa_onnx.FeatureExtractorConfig`` keyword
        arguments), ``chunk_size`` / ``left_context``, ``encoder_metadata``,
        ``encoder_pass`` ("only"; a cascade's "first" online or "final" offline).

    Raises:
        ExportError: a model or setting sherpa-onnx cannot run (the message says why).
    """
    from speechfm.models.io import load_model_dir
    from speechfm.nn.adapters import adapter_keys

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _require("onnx", *(["onnxruntime"] if int8 else []))
    loaded = load_model_dir(model_dir)
    model: Any = loaded.module.float().eval()
    from speechfm.models.io import get_family

    head = get_family(loaded.family).asr_head  # the family table says which ASR output it has
    if head is None or not hasattr(model, "recognize"):
        raise ExportError(f"{model_dir}: a {loaded.family} model; the ONNX export covers "
                          "CTC and transducer ASR models")
    if loaded.tokenizer is None:
        raise ExportError(f"{model_dir}: no tokenizer part (tokens.txt needs one)")
    if model.blank_id != 0:
        raise ExportError(f"{model_dir}: blank id {model.blank_id}; sherpa-onnx's transducer "
                          "and CTC searches take the blank to be id 0")
    if adapter_keys(model):
        names = sorted({name for name, _ in adapter_keys(model)})
        raise ExportError(f"{model_dir}: carries adapters {names}; export a model without "
                          "them (the graphs hold the base model only)")
    features = sherpa_feature_config(model.encoder.fbank.config)
    encoder: Any = model.encoder.conformer
    ctc = head == _CTC_HEAD
    problem = None if ctc else _streaming_problem(model)
    if ctc and mode == "online":
        raise ExportError(f"{model_dir}: CTC models export offline (sherpa-onnx's zipformer2_ctc "
                          "type); streaming export covers transducers")
    if mode == "online" and problem:
        raise ExportError(f"{model_dir}: cannot stream: {problem}; export it with mode offline")
    online = not ctc and problem is None and mode in ("auto", "online")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tokens(loaded.tokenizer, out / "tokens.txt")
    info: dict[str, Any] = {"format": "sherpa-onnx", "source": str(loaded.directory),
                            "family": loaded.family, "feature_config": features,
                            "frame_shift_s": model.encoder.fbank.config.frame_shift,
                            "opset": opset}
    if online:
        from speechfm.api import DEFAULT_STREAM_CHUNK

        chunk = chunk_size if chunk_size is not None else (
            encoder.chunk_size if encoder.chunk_size > 0 else DEFAULT_STREAM_CHUNK)
        left = left_context if left_context is not None else (
            encoder.left_context if encoder.left_context > 0 else DEFAULT_LEFT_CONTEXT)
        if chunk <= 0 or left <= 0:
            raise ExportError(f"a streaming export needs chunk_size > 0 and left_context > 0 "
                              f"(sherpa-onnx's states have a fixed size); got {chunk}, {left}")
        meta = _export_streaming_encoder(model, out / "encoder.onnx", chunk_size=chunk,
                                         left_context=left, opset=opset)
        files = _export_decoder_joiner(model, out, opset)
        info.update(kind="online_transducer", sherpa_model_type="conformer",
                    encoder_metadata=meta, encoder_pass="first" if model.cascaded else "only")
    else:
        chunk = encoder.chunk_size if chunk_size is None else chunk_size
        left = encoder.left_context if left_context is None else left_context
        common = {"comment": "speechfm offline encoder", "chunk_size": chunk,
                  "left_context": left, "subsampling_factor": encoder.front_end.time_stride}
        if ctc:
            _export_offline_encoder(model, model.head, out / "model.onnx", ctc=True,
                                    final_pass=False, chunk_size=chunk, left_context=left,
                                    opset=opset)
            meta = {"model_type": "zipformer2_ctc", "vocab_size": model.vocab_size, **common}
            _add_metadata(out / "model.onnx", meta)
            files = {"model": "model.onnx"}
            info.update(kind="offline_ctc", sherpa_model_type="zipformer2_ctc", encoder_pass="only")
        else:
            final = model.cascaded
            _export_offline_encoder(model, model.joiner.encoder_proj, out / "encoder.onnx",
                                    ctc=False, final_pass=final, chunk_size=chunk,
                                    left_context=left, opset=opset)
            meta = {"model_type": "conformer", **common}
            _add_metadata(out / "encoder.onnx", meta)
            files = _export_decoder_joiner(model, out, opset)
            info.update(kind="offline_transducer", sherpa_model_type="transducer",
                        encoder_pass="final" if final else "only")
            if problem:  # why it is not a streaming export
                info["not_streaming"] = problem
        info["encoder_metadata"] = meta
    info.update(chunk_size=chunk, left_context=left)
    info["files"] = {**files, "tokens": "tokens.txt"}
    if int8:
        int8_files = {}
        for role, name in files.items():
            q = name.replace(".onnx", ".int8.onnx")
            _quantize(out / name, out / q)
            int8_files[role] = q
        info["int8_files"] = {**int8_files, "tokens": "tokens.txt"}
    (out / EXPORT_JSON).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log.info("exported %s (%s) to %s", loaded.directory, info["kind"], out)
    return info
