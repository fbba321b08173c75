"""Locating the espeak-ng shared library and its data directory.

speechfm uses espeak-ng twice: as a G2P (through phonemizer) and as an offline TTS
(through ctypes, see ``speechfm.data.corpora.tts``). The library comes from the
``espeakng-loader`` wheel (extra ``g2p``) or, failing that, a system install such as
Debian's ``espeak-ng`` package.
"""

from __future__ import annotations

import ctypes.util
import functools
import os
from pathlib import Path

from speechfm.errors import SpeechfmError


class EspeakNotFound(SpeechfmError):
    """Neither espeakng-loader nor a system espeak-ng library is available."""


@functools.lru_cache(maxsize=1)
def espeak_paths() -> tuple[str, str | None]:
    """Return ``(library_path, data_path)``; ``data_path`` is None for a system install.

    ``SPEECHFM_ESPEAK_LIBRARY`` / ``SPEECHFM_ESPEAK_DATA`` override the search.
    """
    lib = os.environ.get("SPEECHFM_ESPEAK_LIBRARY")
    data = os.environ.get("SPEECHFM_ESPEAK_DATA")
    if lib:
        return lib, data
    try:
        import espeakng_loader

        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except ImportError:
        pass
    found = ctypes.util.find_library("espeak-ng")
    if found is None:
        for cand in ("/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1", "/usr/lib/libespeak-ng.so.1"):
            if Path(cand).exists():
                found = cand
                break
    if found is None:
        raise EspeakNotFound(
            "espeak-ng was not found: install speechfm's g2p extra "
            "(pip install -e '.[g2p]', which brings espeakng-loader) or Debian's espeak-ng"
        )
    return found, data
