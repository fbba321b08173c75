"""Global cepstral mean and variance normalisation (CMVN) of features.

Statistics are accumulated in float64 over every frame of a CutSet, from the cuts'
precomputed features when they have them or from fbank computed on the fly, and stored as
JSON::

    {"kind": "global_cmvn", "dim": 80, "num_frames": 123456, "num_utterances": 321,
     "mean": [...], "var": [...]}

:class:`GlobalCMVN` is the ``nn.Module`` that applies them to (N, T, C) batches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechfm.errors import DataError

log = logging.getLogger(__name__)


class CmvnStats:
    """Running per-dimension mean and variance (Chan et al.'s parallel update, float64).

    Numerically stable for long accumulations, and two accumulators (say from two workers)
    combine exactly with :meth:`merge`.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.count = 0
        self.mean = None if dim is None else np.zeros(dim, dtype=np.float64)
        self.m2 = None if dim is None else np.zeros(dim, dtype=np.float64)
        self.num_utterances = 0

    def _combine(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if count == 0:
            return
        if self.count == 0:
            self.dim = mean.shape[0]
            self.count, self.mean, self.m2 = count, mean.copy(), m2.copy()
            return
        if mean.shape[0] != self.dim:
            raise ValueError(
                f"feature dim {mean.shape[0]} does not match accumulated dim {self.dim}"
            )
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    def update(self, feats: np.ndarray) -> None:
        """Add every frame of ``feats`` (T, C)."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (T, C), got shape {x.shape}")
        self.num_utterances += 1
        if x.shape[0] == 0:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        self._combine(x.shape[0], mean, m2)

    def merge(self, other: CmvnStats) -> None:
        """Fold another accumulator into this one."""
        self.num_utterances += other.num_utterances
        if other.count:
            self._combine(other.count, other.mean, other.m2)

    @property
    def var(self) -> np.ndarray:
        """Population variance (C,)."""
        if self.count == 0:
            raise ValueError("no frames accumulated")
        return self.m2 / self.count


class GlobalCMVN(nn.Module):
    """Normalise features with global statistics: y = (x - mean) / sqrt(max(var, var_floor)).

    Args:
        mean: per-dimension mean, (C,).
        var: per-dimension variance, (C,).
        var_floor: lower bound on the variance, so that a constant dimension (e.g. a mel
            bin above a low-pass cut-off) does not blow up.
        num_frames: frames the statistics were computed on (kept for the record).
        num_utterances: utterances the statistics were computed on.
    """

    def __init__(
        self,
        mean,
        var,
        *,
        var_floor: float = 1e-8,
        num_frames: int = 0,
        num_utterances: int = 0,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        var_t = torch.as_tensor(np.asarray(var, dtype=np.float64))
        if mean_t.dim() != 1 or mean_t.shape != var_t.shape:
            raise ValueError(
                f"mean and var must be (C,) of equal size, got {tuple(mean_t.shape)} and "
                f"{tuple(var_t.shape)}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(var_t).all()):
            raise ValueError("CMVN mean/var contain non-finite values")
        if (var_t < 0).any():
            raise ValueError("CMVN variance must be non-negative")
        self.var_floor = float(var_floor)
        self.num_frames = int(num_frames)
        self.num_utterances = int(num_utterances)
        # float64 so that save() round-trips exactly; cast to the input dtype on use.
        self.register_buffer("mean", mean_t)
        self.register_buffer("var", var_t)
        self.register_buffer("inv_std", var_t.clamp(min=var_floor).rsqrt())

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise (N, T, C) features; with ``x_lens`` (N,), padded frames are left at 0."""
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"expected feature dim {self.dim}, got input of shape {tuple(x.shape)}"
            )
        y = (x - self.mean.to(x.dtype)) * self.inv_std.to(x.dtype)
        if x_lens is not None:
            if x.dim() != 3:
                raise ValueError(f"x_lens needs (N, T, C) input, got {tuple(x.shape)}")
            valid = (
                torch.arange(x.shape[1], device=x.device)[None, :] < x_lens.to(x.device)[:, None]
            )
            y = y.masked_fill(~valid.unsqueeze(-1), 0.0)
        return y

    # --- building, saving, loading -------------------------------------------------------
    @classmethod
    def from_stats(cls, stats: CmvnStats, *, var_floor: float = 1e-8) -> GlobalCMVN:
        if stats.count == 0:
            raise DataError("cannot compute CMVN: no feature frames were accumulated")
        return cls(
            stats.mean,
            stats.var,
            var_floor=var_floor,
            num_frames=stats.count,
            num_utterances=stats.num_utterances,
        )

    @classmethod
    def from_features(cls, feats: Iterable[np.ndarray], *, var_floor: float = 1e-8) -> GlobalCMVN:
        """Statistics over an iterable of (T, C) arrays."""
        stats = CmvnStats()
        for f in feats:
            stats.update(f)
        return cls.from_stats(stats, var_floor=var_floor)

    @classmethod
    def from_cuts(
        cls,
        cuts,
        *,
        fbank_config=None,
        max_cuts: int | None = None,
        var_floor: float = 1e-8,
        progress: bool = False,
    ) -> GlobalCMVN:
        """Accumulate statistics over a lhotse CutSet.

        Args:
            cuts: lhotse CutSet (lazy or eager).
            fbank_config: :class:`~speechfm.features.fbank.FbankConfig` used for cuts without
                precomputed features (defaults to ``FbankConfig()``); cuts with features use
                them as stored.
            max_cuts: only use the first ``max_cuts`` cuts (a sample is usually enough).
            var_floor: see :class:`GlobalCMVN`.
            progress: show a tqdm progress bar.

        Raises:
            DataError: a cut's features or audio cannot be read or are not finite (the error
                names the cut), or no frames at all were found.
        """
        from itertools import islice

        from speechfm.features.fbank import FbankConfig, compute_fbank

        fbank_config = fbank_config or FbankConfig()
        it = iter(cuts) if max_cuts is None else islice(cuts, max_cuts)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="cmvn", unit="cut")
        stats = CmvnStats()
        for cut in it:
            try:
                if cut.has_features:
                    feats = cut.load_features()
                else:
                    feats = compute_fbank(cut.load_audio(), cut.sampling_rate, fbank_config)
            except Exception as e:  # any reader failure: report which cut
                raise DataError(
                    f"cut {cut.id}: cannot get features: {type(e).__name__}: {e}"
                ) from e
            if not np.isfinite(feats).all():
                raise DataError(f"cut {cut.id}: features contain NaN or Inf")
            stats.update(feats)
        return cls.from_stats(stats, var_floor=var_floor)

    def to_dict(self) -> dict:
        return {
            "kind": "global_cmvn",
            "dim": self.dim,
            "num_frames": self.num_frames,
            "num_utterances": self.num_utterances,
            "var_floor": self.var_floor,
            "mean": [float(v) for v in self.mean.tolist()],
            "var": [float(v) for v in self.var.tolist()],
        }

    def save(self, path: str | Path) -> None:
        """Write the statistics as JSON (creating parent folders)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GlobalCMVN:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read CMVN statistics: {e}") from e
        if not isinstance(data, dict) or data.get("kind") != "global_cmvn":
            raise DataError(f"{path}: not a speechfm global CMVN file (kind != 'global_cmvn')")
        try:
            return cls(
                data["mean"],
                data["var"],
                var_floor=data.get("var_floor", 1e-8),
                num_frames=data.get("num_frames", 0),
                num_utterances=data.get("num_utterances", 0),
            )
        except (KeyError, ValueError) as e:
            raise DataError(f"{path}: invalid CMVN statistics: {e}") from e
