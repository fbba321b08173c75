"""speechfm: an open speech/audio foundation-model training stack.

Importing the package is cheap and has no side effects: submodules (and their heavy
dependencies such as torch, lhotse or sentencepiece) load on first use. The inference
API is reachable from here::

    import speechfm
    model = speechfm.load("exp/ctc_small/best")     # imports speechfm.api (and torch) now
    print(model.transcribe("a.wav"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolved on first access, so that `import speechfm` does not import torch.
_LAZY = {
    "load": "speechfm.api",
    "SpeechModel": "speechfm.api",
    "Transcript": "speechfm.api",
}

if TYPE_CHECKING:
    from speechfm.api import SpeechModel, Transcript, load

__all__ = ["SpeechModel", "Transcript", "__version__", "load"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'speechfm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
