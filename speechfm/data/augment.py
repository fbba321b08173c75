"""Waveform augmentation: speed perturbation and additive noise at a chosen SNR.

Two levels:

- functions on arrays: :func:`add_noise` (mix noise in at an exact SNR),
  :func:`white_noise`, :func:`pink_noise`;
- cut transforms, callables ``CutSet -> CutSet`` for :class:`speechfm.data.dataset.AsrDataset`
  (or any lhotse pipeline): :class:`SpeedPerturb` and :class:`AddNoise`. Both are lazy, like
  lhotse's own augmentation: they only record what to do in the cut's manifest (a lhotse
  ``AudioTransform`` on its recording) and the work happens in ``cut.load_audio()``, so an
  augmented cut can also be saved and reloaded.

Speed perturbation is lhotse's ``cut.perturb_speed`` (in lhotse 1.33 it resamples with
lhotse's own PyTorch resampler, so torchaudio is not needed): the speed goes into the cut id
(``<id>_sp0.9``), the audio gets 1/factor times longer, speakers are kept. Augmented cuts
lose their precomputed features (those describe the clean audio), so features get computed
on the fly for them.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from lhotse.augmentation import AudioTransform
from lhotse.utils import fastcopy

from speechfm.errors import AudioError

_NOISE_KINDS = ("white", "pink", "cut")


def _power(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def add_noise(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` into ``samples`` so that 10 log10(P_signal / P_noise) == ``snr_db``.

    Powers are mean squares over the whole signal (all channels).

    Args:
        samples: float waveform (S,) or (channels, S).
        noise: float noise (S_n,); tiled when shorter than S, truncated when longer; the
            same noise goes into every channel. (Pick a random crop before calling for
            variety.)
        snr_db: target signal-to-noise ratio in dB.

    Returns:
        float32 array shaped like ``samples``; ``samples`` unchanged (as float32) when the
        signal is all zeros, since no SNR is defined then.

    Raises:
        ValueError: ``noise`` is empty or silent, or ``snr_db`` is not finite.
    """
    x = np.asarray(samples, dtype=np.float32)
    n = np.asarray(noise, dtype=np.float64).reshape(-1)
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    if n.size == 0:
        raise ValueError("noise is empty")
    length = x.shape[-1]
    if length == 0:
        return x.copy()
    n = np.resize(n, length)  # tiles cyclically when shorter
    p_noise = _power(n)
    if p_noise == 0.0:
        raise ValueError("noise is silent (zero power); cannot reach an SNR")
    p_signal = _power(x)
    if p_signal == 0.0:
        return x.copy()
    gain = math.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (x.astype(np.float64) + gain * n).astype(np.float32)


def white_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, float32 (num_samples,), unit variance."""
    return rng.standard_normal(num_samples).astype(np.float32)


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise, float32 (num_samples,), unit variance.

    White Gaussian noise shaped in the frequency domain by 1/sqrt(f) (the DC bin is
    zeroed), which gives a power spectrum falling 3 dB per octave.
    """
    if num_samples == 0:
        return np.zeros(0, dtype=np.float32)
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    f = np.arange(spec.shape[0], dtype=np.float64)
    scale = np.zeros_like(f)
    scale[1:] = 1.0 / np.sqrt(f[1:])
    x = np.fft.irfft(spec * scale, n=num_samples)
    std = x.std()
    return (x / std if std > 0 else x).astype(np.float32)


@dataclass
class AdditiveNoise(AudioTransform):
    """lhotse audio transform adding noise at ``snr_db`` when a cut's audio is loaded.

    It is stored in the cut manifest like lhotse's ``Speed``; lhotse finds it again by its
    class name when reading the manifest back.

    Attributes:
        snr_db: target SNR in dB over the loaded segment.
        seed: seed of the noise (white/pink samples, or the crop offset of a noise cut).
        kind: "white", "pink" or "cut".
        noise_cut: for kind="cut", the noise cut as a lhotse manifest dict.
    """

    snr_db: float
    seed: int
    kind: str = "white"
    noise_cut: dict | None = None

    def __post_init__(self) -> None:
        if self.kind not in _NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {_NOISE_KINDS}, got {self.kind!r}")
        if self.kind == "cut" and self.noise_cut is None:
            raise ValueError("kind='cut' needs noise_cut")

    def _noise(self, num_samples: int, sampling_rate: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        if self.kind == "white":
            return white_noise(num_samples, rng)
        if self.kind == "pink":
            return pink_noise(num_samples, rng)
        from lhotse.serialization import deserialize_item

        # deepcopy: lhotse's from_dict pops keys from the nested dicts it is given.
        cut = deserialize_item(copy.deepcopy(self.noise_cut))
        try:
            noise = cut.load_audio()
        except Exception as e:
            raise AudioError(f"noise cut {cut.id}: cannot load audio: {e}") from e
        noise = np.asarray(noise, dtype=np.float32)
        noise = noise.mean(axis=0) if noise.ndim == 2 else noise
        if cut.sampling_rate != sampling_rate:
            import soxr

            noise = soxr.resample(noise, cut.sampling_rate, sampling_rate).astype(np.float32)
        if noise.size == 0 or not np.isfinite(noise).all() or _power(noise) == 0.0:
            raise AudioError(f"noise cut {cut.id}: empty, silent or non-finite audio")
        # A random crop (cyclic) so that short noise clips are not always mixed from sample 0.
        start = int(rng.integers(0, noise.shape[0]))
        return np.resize(np.roll(noise, -start), num_samples)

    def __call__(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32)
        noise = self._noise(x.shape[-1], sampling_rate)
        return add_noise(x, noise, self.snr_db)

    def reverse_timestamps(self, offset, duration, sampling_rate):
        # Additive noise keeps the timeline as it is.
        return offset, duration


class _Rng:
    """A ``random.Random`` per process, so DataLoader workers draw different streams.

    ``seed=None`` derives the stream from ``torch.initial_seed()`` of the process, which a
    DataLoader sets distinctly per worker and per epoch (and reproducibly under
    ``torch.manual_seed``); an int seed is combined with the worker id.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._pid: int | None = None
        self._rng: random.Random | None = None

    def get(self) -> random.Random:
        pid = os.getpid()
        if self._rng is None or self._pid != pid:
            import torch

            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
            base = torch.initial_seed() if self.seed is None else self.seed
            self._rng = random.Random(f"{base}:{worker}")
            self._pid = pid
        return self._rng


class SpeedPerturb:
    """Cut transform: speed-perturb each cut by a factor drawn uniformly from ``factors``.

    Uses lhotse's ``cut.perturb_speed`` (lazy; resampling happens on load): the factor is
    appended to the cut, recording and supervision ids (``_sp0.9``), durations scale by
    1/factor, speakers and texts are kept; factor 1.0 leaves the cut untouched.

    Args:
        factors: speed factors to choose from (Kaldi's classic 0.9/1.0/1.1).
        p: probability of perturbing a cut at all (then a factor is drawn).
        seed: see :class:`_Rng`.
    """

    def __init__(
        self, factors: Sequence[float] = (0.9, 1.0, 1.1), *, p: float = 1.0, seed: int | None = None
    ) -> None:
        if not factors or any(f <= 0 for f in factors):
            raise ValueError(f"speed factors must be positive, got {list(factors)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.factors = tuple(float(f) for f in factors)
        self.p = p
        self._rng = _Rng(seed)

    def __call__(self, cuts):
        from lhotse import CutSet

        rng = self._rng.get()
        out = []
        for cut in cuts:
            factor = rng.choice(self.factors) if rng.random() < self.p else 1.0
            out.append(perturb_speed(cut, factor))
        return CutSet.from_cuts(out)


def perturb_speed(cut, factor: float):
    """``cut`` sped up ``factor`` times (lazy); identity for 1.0; drops stale features."""
    if factor == 1.0:
        return cut
    if cut.has_features:
        # lhotse would warn and detach them in place; detach on a copy instead.
        cut = cut.drop_features()
    return cut.perturb_speed(factor)


def speed_perturb_copies(cuts, factors: Sequence[float] = (0.9, 1.0, 1.1)):
    """Kaldi-style static speed perturbation: the union of one copy of ``cuts`` per factor.

    Copies other than 1.0 get ``_sp<factor>`` id suffixes, so all ids stay unique.
    Lazy CutSets stay lazy.
    """
    result = None
    for factor in factors:
        # A partial, not a lambda, so that lazy CutSets stay picklable for DataLoader workers.
        part = cuts if factor == 1.0 else cuts.map(partial(perturb_speed, factor=factor))
        result = part if result is None else result + part
    return result


def add_noise_to_cut(cut, transform: AdditiveNoise):
    """A copy of ``cut`` whose audio gets ``transform`` applied when loaded.

    Precomputed features are dropped (they describe the clean audio); the id is kept.
    """
    from lhotse.cut import MixedCut

    if cut.has_features:
        cut = cut.drop_features()
    if isinstance(cut, MixedCut):
        return fastcopy(cut, transforms=list(cut.transforms or []) + [transform])
    if not cut.has_recording:
        raise AudioError(f"cut {cut.id}: has no recording to add noise to")
    rec = cut.recording
    rec = fastcopy(rec, transforms=list(rec.transforms or []) + [transform])
    return fastcopy(cut, recording=rec)


class AddNoise:
    """Cut transform: add noise to each cut with probability ``p`` at a uniform random SNR.

    Args:
        noise_cuts: a lhotse CutSet of noise recordings (read fully into memory here); a
            random one is picked per cut, resampled if needed, cropped at a random offset
            and looped to length. When None, synthetic ``kind`` noise is used.
        kind: synthetic noise colour when ``noise_cuts`` is None: "white" or "pink".
        snr_range: (low, high) SNR in dB, drawn uniformly.
        p: probability that a cut gets noise.
        seed: see :class:`_Rng`.
    """

    def __init__(
        self,
        *,
        noise_cuts=None,
        kind: str = "white",
        snr_range: tuple[float, float] = (10.0, 30.0),
        p: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if kind not in ("white", "pink"):
            raise ValueError(f"kind must be 'white' or 'pink', got {kind!r}")
        lo, hi = snr_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(
                f"snr_range must be finite (low, high) with low <= high, got {snr_range}"
            )
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.noise = None
        if noise_cuts is not None:
            self.noise = [c.to_dict() for c in noise_cuts]
            if not self.noise:
                raise ValueError("noise_cuts is empty")
        self.kind = kind
        self.snr_range = (float(lo), float(hi))
        self.p = p
        self._rng = _Rng(seed)

    def __call__(self, cuts):
        from lhotse import CutSet

        rng = self._rng.get()
        out = []
        for cut in cuts:
            if rng.random() >= self.p:
                out.append(cut)
                continue
            snr = rng.uniform(*self.snr_range)
            seed = rng.getrandbits(31)
            if self.noise is not None:
                t = AdditiveNoise(
                    snr_db=snr, seed=seed, kind="cut", noise_cut=rng.choice(self.noise)
                )
            else:
                t = AdditiveNoise(snr_db=snr, seed=seed, kind=self.kind)
            out.append(add_noise_to_cut(cut, t))
        return CutSet.from_cuts(out)
