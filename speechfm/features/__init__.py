"""speechfm.features: Kaldi-compatible fbank, global CMVN and SpecAugment.

- :mod:`speechfm.features.fbank`: ``FbankConfig``, ``compute_fbank`` (kaldi-native-fbank),
  ``TorchFbank`` (batched, any device) and the lhotse extractor ``KnfFbankExtractor``;
- :mod:`speechfm.features.cmvn`: ``GlobalCMVN`` (statistics from a CutSet, JSON, nn.Module);
- :mod:`speechfm.features.specaug`: ``SpecAugment``.

The names are importable from this package too, but the submodules (which pull in torch
and lhotse) load only on first use, so ``import speechfm.features`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FbankConfig": "fbank",
    "compute_fbank": "fbank",
    "TorchFbank": "fbank",
    "KnfFbankExtractor": "knf_extractor",
    "CmvnStats": "cmvn",
    "GlobalCMVN": "cmvn",
    "SpecAugment": "specaug",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
