"""Helpers shared by the speechfm.data tests: synthetic audio files and a fake tokenizer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# soundfile (format, subtype) per file extension
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A float64 sine of ``seconds`` at ``sr`` Hz, shape (S,)."""
    t = np.arange(int(round(sr * seconds))) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def write_audio(
    path: Path,
    sr: int = 16000,
    seconds: float = 0.5,
    *,
    channels: int = 1,
    freq: float = 440.0,
    samples: np.ndarray | None = None,
    subtype: str | None = None,
) -> Path:
    """Write a tone (or ``samples``, (S,) or (S, C)) in the format named by the suffix."""
    import soundfile as sf

    fmt, default_subtype = FORMATS[path.suffix[1:]]
    if samples is None:
        x = tone(sr, seconds, freq)
        # channel k is the tone scaled by 1/(k+1), so the mono mix has a known level
        samples = np.stack([x / (k + 1) for k in range(channels)], axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, format=fmt, subtype=subtype or default_subtype)
    return path


def peak_frequency(x: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the strongest FFT bin of ``x``."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


class FakeTokenizer:
    """The smallest object check_cuts accepts: knows a fixed set of characters."""

    def __init__(self, alphabet: str) -> None:
        self.alphabet = set(alphabet)

    def unknown_symbols(self, text: str) -> set[str]:
        return {c for c in text if not c.isspace() and c not in self.alphabet}


@pytest.fixture
def h() -> SimpleNamespace:
    """The helpers above (test modules cannot import a conftest by name)."""
    return SimpleNamespace(
        FORMATS=FORMATS,
        tone=tone,
        write_audio=write_audio,
        peak_frequency=peak_frequency,
        FakeTokenizer=FakeTokenizer,
    )


@pytest.fixture
def run_cli(capsys):
    """Run ``speechfm ...`` in-process; returns (exit status, stdout, stderr)."""
    from speechfm.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run
