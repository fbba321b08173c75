"""speechfm: an open speech/audio foundation-model training stack.

Importing the package is cheap and has no side effects: submodules (and their heavy
dependencies such as lhotse or sentencepiece) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
