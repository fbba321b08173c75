"""Deployment exports of speechfm models.

- :func:`export_onnx`: CTC and transducer model directories -> ONNX files in the layout
  sherpa-onnx loads (``speechfm export MODEL --format onnx``);
- :func:`create_recognizer` / :func:`recognize`: a sherpa-onnx recognizer over such an
  export, with the model's feature options.

onnx, onnxruntime and sherpa-onnx are the ``export`` extra; they are imported when used.
"""

from speechfm.export.onnx import DEFAULT_LEFT_CONTEXT, export_onnx, write_tokens
from speechfm.export.sherpa import (
    EXPORT_JSON,
    ExportError,
    create_recognizer,
    read_export,
    recognize,
    sherpa_feature_config,
    tail_padding_s,
)

__all__ = [
    "DEFAULT_LEFT_CONTEXT",
    "EXPORT_JSON",
    "ExportError",
    "create_recognizer",
    "export_onnx",
    "read_export",
    "recognize",
    "sherpa_feature_config",
    "tail_padding_s",
    "write_tokens",
]
