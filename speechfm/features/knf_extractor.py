"""lhotse feature extractor around kaldi-native-fbank (see :mod:`speechfm.features.fbank`).

Kept apart from :mod:`speechfm.features.fbank` so that the fbank settings and the torch
implementation import without lhotse (GPU hosts carry torch only).
"""

from __future__ import annotations

import numpy as np
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import compute_num_frames_from_samples

from speechfm.features.fbank import _FLOAT_EPS, FbankConfig, _as_mono, compute_fbank


@register_extractor
class KnfFbankExtractor(FeatureExtractor):
    """lhotse feature extractor computing :func:`compute_fbank` (kaldi-native-fbank).

    Registered with lhotse (a lhotse requirement for reading extractor configs back) under
    the name ``speechfm-knf-fbank``. Recordings at another rate than ``config.sample_rate``
    are resampled with soxr; the frame count then follows lhotse's rule for the recording's
    own rate (the two differ by at most one frame, fixed by repeating or dropping the last).
    Requires ``snip_edges=False``, whose frame count is the one lhotse's manifests assume.
    lhotse also needs the frame shift to be a whole number of samples at the recording's
    rate (so 22050 Hz audio must be resampled, e.g. to 16 kHz, before storing features).
    """

    name = "speechfm-knf-fbank"
    config_type = FbankConfig

    def __init__(self, config: FbankConfig | None = None) -> None:
        super().__init__(config)
        self.config.validate()
        if self.config.snip_edges:
            raise ValueError(
                "KnfFbankExtractor needs snip_edges=False: lhotse expects round(S / shift) "
                "frames per cut"
            )

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.feature_dim

    def extract(self, samples, sampling_rate: int) -> np.ndarray:
        """(S,) or (channels, S) samples -> float32 (T, C)."""
        x = _as_mono(samples)
        feats = compute_fbank(x, sampling_rate, self.config)
        if sampling_rate != self.config.sample_rate:
            want = compute_num_frames_from_samples(x.shape[0], self.frame_shift, sampling_rate)
            if feats.shape[0] > want:
                feats = feats[:want]
            elif 0 < feats.shape[0] < want:
                pad = np.repeat(feats[-1:], want - feats.shape[0], axis=0)
                feats = np.concatenate([feats, pad], axis=0)
        return feats

    # Feature-domain mixing (lets lhotse mix cuts that already have these features).
    @staticmethod
    def mix(features_a: np.ndarray, features_b: np.ndarray, energy_scaling_factor_b: float):
        return np.log(
            np.maximum(
                _FLOAT_EPS, np.exp(features_a) + energy_scaling_factor_b * np.exp(features_b)
            )
        ).astype(np.float32)

    @staticmethod
    def compute_energy(features: np.ndarray) -> float:
        return float(np.sum(np.exp(features)))
