"""speechfm.asr: CTC speech recognition end to end - training, decoding, scoring.

- :mod:`speechfm.asr.config`: ``AsrTrainConfig`` (YAML + ``key=value`` overrides),
  ``load_train_config``, ``build_model_config``, ``model_dir_config``;
- :mod:`speechfm.asr.train`: ``train_asr`` (checkpoints, resume, DDP, averaging, export);
- :mod:`speechfm.asr.decode`: ``load_asr_model``, ``decode_manifest`` (hyps, errs files,
  per-language CER/WER/PER), ``evaluate_ctc``, ``format_results_table``.

Names resolve lazily, so importing the package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AsrTrainConfig": "speechfm.asr.config",
    "build_model_config": "speechfm.asr.config",
    "load_train_config": "speechfm.asr.config",
    "model_dir_config": "speechfm.asr.config",
    "train_asr": "speechfm.asr.train",
    "decode_manifest": "speechfm.asr.decode",
    "evaluate_ctc": "speechfm.asr.decode",
    "format_results_table": "speechfm.asr.decode",
    "load_asr_model": "speechfm.asr.decode",
}

__all__ = [
    "AsrTrainConfig",
    "build_model_config",
    "decode_manifest",
    "evaluate_ctc",
    "format_results_table",
    "load_asr_model",
    "load_train_config",
    "model_dir_config",
    "train_asr",
]

if TYPE_CHECKING:
    from speechfm.asr.config import (
        AsrTrainConfig,
        build_model_config,
        load_train_config,
        model_dir_config,
    )
    from speechfm.asr.decode import (
        decode_manifest,
        evaluate_ctc,
        format_results_table,
        load_asr_model,
    )
    from speechfm.asr.train import train_asr


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speechfm.asr' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
