"""``speechfm export``: a model directory -> files another runtime loads.

    speechfm export MODEL_DIR --format onnx --out DIR [--int8] [--mode auto|online|offline]
                    [--chunk-size N] [--left-context N]

``--format onnx`` writes sherpa-onnx's layout (:func:`speechfm.export.export_onnx`): a CTC
model as ``model.onnx`` + ``tokens.txt`` (offline), a streaming transducer as
``encoder.onnx`` / ``decoder.onnx`` / ``joiner.onnx`` + ``tokens.txt`` with its cached
states as inputs and outputs (online; a cascade's first pass), any other transducer as
the same three files for offline decoding. ``--int8`` adds ``*.int8.onnx`` beside them.
``DIR/export.json`` records the feature options sherpa-onnx must be given;
``speechfm.export.create_recognizer(DIR)`` builds the recognizer with them.
"""

from __future__ import annotations

import argparse

FORMATS = ("onnx",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a CTC or transducer model for sherpa-onnx (ONNX)",
        description="Export a speechfm model directory to ONNX files in the layout "
        "sherpa-onnx loads: CTC -> model.onnx (offline zipformer2_ctc type); streaming "
        "transducer -> encoder/decoder/joiner.onnx (online conformer type, cached states as "
        "inputs/outputs); other transducers -> the same files for offline decoding. "
        "tokens.txt and export.json (feature options) go beside them.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="speechfm model directory")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--int8", action="store_true",
                   help="also write dynamically int8-quantised *.int8.onnx files")
    p.add_argument("--mode", choices=("auto", "online", "offline"), default="auto",
                   help="online: streaming transducer; offline: whole utterances; auto: "
                   "online when the transducer's encoder can stream (default)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="attention chunk in encoder frames (online: frames per encoder "
                   "call; default: the model's, else 16)")
    p.add_argument("--left-context", type=int, default=None, metavar="N",
                   help="cached encoder frames per layer (online default: the model's, "
                   "else 64)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from speechfm.errors import SpeechfmError

    try:
        from speechfm.export import export_onnx
        info = export_onnx(args.model_dir, args.out, mode=args.mode, int8=args.int8,
                           chunk_size=args.chunk_size, left_context=args.left_context)
    except ImportError as e:  # the export extra is not installed
        raise SpeechfmError(f"{e}; install the export extra: pip install 'speechfm[export]'") from e
    out = Path(args.out)
    print(f"exported {args.model_dir} -> {out} ({info['kind']}, sherpa-onnx model type "
          f"{info['sherpa_model_type']!r})")
    for role, name in info["files"].items():
        print(f"  {role}: {out / name}")
    for role, name in info.get("int8_files", {}).items():
        if role != "tokens":
            print(f"  {role} (int8): {out / name}")
    if "not_streaming" in info:
        print(f"  offline: the model cannot stream ({info['not_streaming']})")
    if info["kind"] == "online_transducer":
        print(f"  chunk: {info['chunk_size']} encoder frames, left context "
              f"{info['left_context']} frames")
    feats = ", ".join(f"{k}={v}" for k, v in info["feature_config"].items())
    print(f"  sherpa-onnx feature options: {feats}")
    print(f"  python: speechfm.export.create_recognizer({str(out)!r})")
    return 0
