"""Voice-activity detection without a model: is there speech in this audio, and where?

An ASR model given only background noise still emits its most likely tokens, so
:meth:`speechfm.api.SpeechModel.transcribe` asks this detector first: an input with no
detected speech gives ``""`` without being decoded, and long recordings are cut into
pieces at the pauses it finds (:mod:`speechfm.decode.longform`).

The detector (numpy only, no weights, no downloads) looks for sound that rises well
above its own background, band by band:

1. Short-time power spectra (25 ms Hann frames every 10 ms) are summed into six bands,
   100-250-500-1000-2000-4000-7500 Hz, as log energies (dB), smoothed over 50 ms.
2. Each band's noise floor adapts to the recording: the 10th percentile of the band's
   energy in each 0.5 s block, then the lowest of those within 5 s either side.
3. A frame is speech when some band stands at least its threshold above its floor
   (13, 10, 9, 8, 8, 8 dB: the narrow low bands fluctuate more in noise), the frame is
   above -70 dBFS, and such frames last at least 30 ms in a row.

Stationary sounds never rise above their own floor, whatever their level or colour:
white, pink and brown noise from -60 to -10 dBFS and a 50 Hz mains hum with harmonics
give no speech (20 minutes of such noise stay 2 dB or more below every threshold), and
neither does a steady tone. Speech, with its syllable-rate modulation of 20-60 dB,
stands out in every band it excites: on the real recordings of the shared data
(tests/unit/features/test_vad.py) every one of 3,000 FSDD digits and 300 festvox
sentences has speech, and 2,509 of 2,517 Speech Commands words (the 8 misses are one
speaker's clips with a 3-4 dB range over the whole second: no audible word). With
white, pink or brown noise added at 10 dB SNR every clip of a sample of 160 (FSDD,
festvox, Speech Commands, espeak-ng TTS) still has speech, and at 0 dB SNR 479 of 480.
Non-stationary noise (dishes, a running tap, music) can pass as speech (55 of the 227
background-noise clips of Speech Commands do): this is a gate against background
noise, not a speech/music classifier.

Arrays are float (S,) samples in [-1, 1] at any rate; frames are ``hop`` samples apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VadConfig", "VoiceActivity", "detect_voice", "has_speech"]


@dataclass(kw_only=True)
class VadConfig:
    """Settings of :func:`detect_voice` (the defaults are the tuned ones above)."""

    frame_s: float = 0.025
    """Analysis window length, seconds."""
    hop_s: float = 0.010
    """Frame shift, seconds."""
    band_edges_hz: tuple[float, ...] = (100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 7500.0)
    """Band edges in Hz (bands above the Nyquist rate of the input are left out)."""
    thresholds_db: tuple[float, ...] = (13.0, 10.0, 9.0, 8.0, 8.0, 8.0)
    """Per band: how far above its noise floor a band must rise to count as speech (dB)."""
    smooth_s: float = 0.05
    """Moving average of the band energies over time, seconds."""
    floor_block_s: float = 0.5
    """Block over which the low percentile of each band's energy is taken, seconds."""
    floor_window_s: float = 5.0
    """The noise floor is the lowest block percentile within this many seconds either side."""
    floor_percentile: float = 10.0
    """Percentile (0-100) of the band energy in a block that estimates the noise in it."""
    min_level_dbfs: float = -70.0
    """Frames quieter than this (RMS, dB re full scale 1.0) are never speech."""
    min_run_s: float = 0.03
    """Shortest run of speech frames that counts, seconds."""

    def validate(self) -> None:
        edges = self.band_edges_hz
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"band_edges_hz must increase, got {edges}")
        if len(self.thresholds_db) != len(edges) - 1:
            raise ValueError(f"thresholds_db needs one value per band ({len(edges) - 1}), "
                             f"got {len(self.thresholds_db)}")
        if not 0 < self.hop_s <= self.frame_s:
            raise ValueError(f"need 0 < hop_s <= frame_s, got {self.hop_s}, {self.frame_s}")
        if not 0 <= self.floor_percentile <= 100:
            raise ValueError(f"floor_percentile must be in [0, 100], got {self.floor_percentile}")
        for name in ("smooth_s", "floor_block_s", "floor_window_s", "min_run_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class VoiceActivity:
    """What :func:`detect_voice` found in one recording."""

    speech: np.ndarray
    """bool (T,): frame t (samples ``[t * hop, t * hop + frame)``) holds speech."""
    level_db: np.ndarray
    """float32 (T,): frame RMS level in dB re full scale 1.0 (-120 for digital silence)."""
    hop: int
    """Samples between frames."""
    frame: int
    """Samples per frame."""
    num_samples: int
    """Length of the recording in samples."""

    @property
    def has_speech(self) -> bool:
        return bool(self.speech.any())

    def regions(self, *, pad: int = 0, merge_gap: int = 0) -> list[tuple[int, int]]:
        """Speech as ``[(start, end), ...]`` sample ranges, in order and disjoint.

        Args:
            pad: samples added on each side of every run of speech frames (clipped to the
                recording).
            merge_gap: runs whose padded ranges are at most this many samples apart are
                merged into one range.
        """
        out: list[tuple[int, int]] = []
        for first, last in _runs(self.speech):
            start = max(0, first * self.hop - pad)
            end = min(self.num_samples, last * self.hop + self.frame + pad)
            if out and start - out[-1][1] <= merge_gap:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` frame index (inclusive) of each run of True in a bool (T,) mask."""
    if mask.size == 0:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _band_energies(x: np.ndarray, sample_rate: int, config: VadConfig, frame: int, hop: int,
                   block_frames: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """(T, B) band log energies (dB) and (T,) frame RMS levels (dBFS), computed a block of
    frames at a time so that memory stays small whatever the length."""
    nfft = 1 << (frame - 1).bit_length()
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    nyquist = sample_rate / 2
    bands = [(freqs >= lo) & (freqs < min(hi, nyquist))
             for lo, hi in zip(config.band_edges_hz, config.band_edges_hz[1:], strict=False)]
    window = np.hanning(frame).astype(np.float32)
    scale = 2.0 / (float((window ** 2).sum()) * frame)  # a full-scale sine's band ~ -3 dB
    num = 1 + (x.shape[0] - frame) // hop
    energies = np.empty((num, len(bands)), np.float32)
    levels = np.empty(num, np.float32)
    for t0 in range(0, num, block_frames):
        n = min(block_frames, num - t0)
        frames = np.lib.stride_tricks.as_strided(
            x[t0 * hop:], shape=(n, frame), strides=(x.strides[0] * hop, x.strides[0]),
            writeable=False)
        levels[t0:t0 + n] = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), 1) + 1e-12)
        power = np.abs(np.fft.rfft(frames * window, nfft)) ** 2 * scale
        for b, mask in enumerate(bands):
            band = power[:, mask].mean(1) if mask.any() else np.zeros(n)
            energies[t0:t0 + n, b] = 10 * np.log10(band + 1e-12)
    return energies, levels


def _smooth(e: np.ndarray, k: int) -> np.ndarray:
    """Centered moving average over ``k`` frames (edges repeated) of a (T, B) array."""
    if k <= 1 or e.shape[0] < 2:
        return e
    padded = np.pad(e.astype(np.float64), ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    c = np.concatenate([np.zeros((1, e.shape[1])), np.cumsum(padded, 0)])
    return ((c[k:] - c[:-k]) / k).astype(np.float32)


def _noise_floor(e: np.ndarray, block: int, reach: int, q: float) -> np.ndarray:
    """(T, B) noise floor: per block of frames the ``q``-th percentile of each band, then
    the minimum over ``reach`` blocks either side, repeated back to frames."""
    t, b = e.shape
    nb = -(-t // block)
    padded = np.full((nb * block, b), np.nan, np.float32)
    padded[:t] = e
    per_block = np.nanpercentile(padded.reshape(nb, block, b), q, axis=1)
    floor = per_block.copy()
    for s in range(1, reach + 1):
        floor[s:] = np.minimum(floor[s:], per_block[:-s])
        floor[:-s] = np.minimum(floor[:-s], per_block[s:])
    return np.repeat(floor, block, axis=0)[:t]


def detect_voice(samples: np.ndarray, sample_rate: int,
                 config: VadConfig | None = None) -> VoiceActivity:
    """Find the speech in a recording (the algorithm is in the module docstring).

    Args:
        samples: float (S,) samples in [-1, 1] (any length; a recording shorter than one
            frame has no speech).
        sample_rate: rate in Hz.
        config: the detector's settings; None = :class:`VadConfig` defaults.

    Returns:
        A :class:`VoiceActivity` (per-frame speech flags and levels).
    """
    config = config or VadConfig()
    config.validate()
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (S,), got shape {x.shape}")
    frame = max(1, int(round(config.frame_s * sample_rate)))
    hop = max(1, int(round(config.hop_s * sample_rate)))
    if x.shape[0] < frame:
        return VoiceActivity(np.zeros(0, bool), np.zeros(0, np.float32), hop, frame, x.shape[0])
    energies, levels = _band_energies(x, sample_rate, config, frame, hop)
    smoothed = _smooth(energies, max(1, int(round(config.smooth_s / config.hop_s))))
    block = max(1, int(round(config.floor_block_s / config.hop_s)))
    reach = int(round(config.floor_window_s / config.floor_block_s)) if config.floor_block_s else 0
    excess = smoothed - _noise_floor(smoothed, block, reach, config.floor_percentile)
    thresholds = np.asarray(config.thresholds_db, np.float32)
    speech = (excess >= thresholds).any(axis=1) & (levels > config.min_level_dbfs)
    min_run = max(1, int(round(config.min_run_s / config.hop_s)))
    for first, last in _runs(speech):
        if last - first + 1 < min_run:
            speech[first:last + 1] = False
    return VoiceActivity(speech, levels, hop, frame, x.shape[0])


def has_speech(samples: np.ndarray, sample_rate: int, config: VadConfig | None = None) -> bool:
    """True when :func:`detect_voice` finds any speech in ``samples``."""
    return detect_voice(samples, sample_rate, config).has_speech
