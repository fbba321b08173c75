"""Kaldi-compatible log-mel filterbank features.

Three front ends share one :class:`FbankConfig` and give the same numbers:

- :func:`compute_fbank`: one utterance on the CPU through kaldi-native-fbank (knf), the
  reference implementation used for stored features and data pipelines;
- :class:`TorchFbank`: a batched pure-PyTorch module (CPU or GPU) for on-the-fly features
  inside a model; padding a batch never changes an utterance's features. On real audio it
  matches knf to within 1e-3 (mean ~5e-6) on every bin within 80 dB of its frame's energy.
  Deeper bins (say the empty 4-8 kHz band of upsampled 8 kHz audio) sit at the rounding
  noise of knf's float32 FFT, where knf itself is up to ~3e-3 off an exact float64
  computation; given float64 input, TorchFbank *is* that exact computation (to ~1e-11);
- :class:`speechfm.features.knf_extractor.KnfFbankExtractor`: a lhotse ``FeatureExtractor``
  around knf so that ``cuts.compute_and_store_features(KnfFbankExtractor(), ...)`` works.

This module needs torch and numpy only (kaldi-native-fbank is imported where it is used), so
models that carry an :class:`FbankConfig` load on hosts without lhotse or knf.

Waveforms are float samples in [-1, 1] (not the int16 range Kaldi binaries see), so log-mel
values are about 2*log(32768) ~= 20.8 lower than Kaldi's ``compute-fbank-feats`` output,
unless ``FbankConfig.waveform_scale=32768`` scales them to that range first (as
transformers' ``SeamlessM4TFeatureExtractor`` does).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

# Kaldi floors log arguments at the single-precision machine epsilon.
_FLOAT_EPS = float(np.finfo(np.float32).eps)
_WINDOW_TYPES = ("povey", "hamming", "hanning", "hann", "rectangular", "blackman")
_COMPUTE_DTYPES = ("auto", "float64")


@dataclass(kw_only=True)
class FbankConfig:
    """Settings of Kaldi-style log-mel filterbank features (defaults: 80-dim, 25 ms / 10 ms)."""

    sample_rate: int = 16000
    """Sampling rate in Hz the features are computed at; other rates are resampled first."""
    num_mel_bins: int = 80
    """Number of triangular mel filters, i.e. the feature dimension C (without energy)."""
    frame_length_ms: float = 25.0
    """Analysis window length in milliseconds."""
    frame_shift_ms: float = 10.0
    """Hop between successive frames in milliseconds."""
    dither: float = 0.0
    """Standard deviation of Gaussian noise added to every sample (0 = deterministic)."""
    preemph_coeff: float = 0.97
    """Pre-emphasis coefficient: x[i] -= coeff * x[i-1] within each frame."""
    remove_dc_offset: bool = True
    """Subtract each frame's mean before pre-emphasis."""
    window_type: str = "povey"
    """Window function: povey, hamming, hanning (or hann), rectangular or blackman."""
    blackman_coeff: float = 0.42
    """Constant of the generalised Blackman window (only used by window_type=blackman)."""
    round_to_power_of_two: bool = True
    """Zero-pad each frame to the next power of two before the FFT (512 for 400 samples)."""
    snip_edges: bool = False
    """True: only frames that fit entirely in the signal; False: frames centred on every shift,
    the edges filled by reflection (Kaldi's convention, giving round(num_samples / shift) frames)."""
    low_freq: float = 20.0
    """Lower edge of the first mel filter in Hz."""
    high_freq: float = 0.0
    """Upper edge of the last mel filter in Hz; <= 0 means nyquist + high_freq."""
    use_energy: bool = False
    """Prepend the log frame energy as an extra first feature (C becomes num_mel_bins + 1)."""
    raw_energy: bool = True
    """Compute that energy before pre-emphasis and windowing (Kaldi's default)."""
    energy_floor: float = 0.0
    """Floor on the frame energy (linear scale) when use_energy; 0 disables the floor."""
    use_power: bool = True
    """Mel filters act on the power spectrum (True) or the magnitude spectrum (False)."""
    use_log_fbank: bool = True
    """Take the log of the mel energies, floored at float32 epsilon."""
    waveform_scale: float = 1.0
    """Multiply the samples by this before anything else (dither included). 1 keeps
    waveforms in [-1, 1]; 32768 gives the int16 range that Kaldi binaries and
    transformers' ``SeamlessM4TFeatureExtractor`` (w2v-BERT 2.0) see: every log-mel value
    moves up by 2 ln 32768 and the float32-epsilon log floor then only catches
    (near-)digital silence. :func:`compute_fbank` and :class:`TorchFbank` apply it;
    :meth:`to_knf` options cannot carry it, so a caller feeding knf directly must scale
    the samples itself."""
    compute_dtype: str = "auto"
    """Precision of :class:`TorchFbank`: "auto" computes in the input's precision (float64
    for float64 input, else float32); "float64" always computes in float64 and returns
    what "auto" would (float32 unless the input is float64). That removes the float32 FFT
    noise of deep bins (e.g. the empty 4-8 kHz band of upsampled 8 kHz audio) at the cost
    of a float64 FFT. (:func:`compute_fbank` is knf, float32 either way.)"""

    def validate(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.num_mel_bins < 3:
            raise ValueError(f"num_mel_bins must be at least 3, got {self.num_mel_bins}")
        if self.frame_shift_ms <= 0 or self.frame_length_ms <= 0:
            raise ValueError(
                f"frame_length_ms and frame_shift_ms must be positive, got "
                f"{self.frame_length_ms} and {self.frame_shift_ms}"
            )
        if self.window_shift < 1 or self.window_size < 2:
            raise ValueError(
                f"frames of {self.frame_length_ms} ms / shift {self.frame_shift_ms} ms are under "
                f"two samples at {self.sample_rate} Hz"
            )
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, got {self.dither}")
        if not 0.0 <= self.preemph_coeff <= 1.0:
            raise ValueError(f"preemph_coeff must be in [0, 1], got {self.preemph_coeff}")
        if self.window_type not in _WINDOW_TYPES:
            raise ValueError(
                f"window_type must be one of {_WINDOW_TYPES}, got {self.window_type!r}"
            )
        nyquist = 0.5 * self.sample_rate
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not (0.0 <= self.low_freq < high <= nyquist):
            raise ValueError(
                f"need 0 <= low_freq < high_freq <= nyquist ({nyquist} Hz); got low_freq="
                f"{self.low_freq}, high_freq={self.high_freq} (-> {high} Hz)"
            )
        if self.energy_floor < 0:
            raise ValueError(f"energy_floor must be >= 0, got {self.energy_floor}")
        if self.compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {_COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )
        if not (math.isfinite(self.waveform_scale) and self.waveform_scale > 0):
            raise ValueError(f"waveform_scale must be a positive number, got {self.waveform_scale}")

    @property
    def window_size(self) -> int:
        """Frame length in samples (Kaldi truncates, as here)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Frame shift in samples."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_window_size(self) -> int:
        """FFT length in samples."""
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    @property
    def frame_shift(self) -> float:
        """Frame shift in seconds."""
        return self.frame_shift_ms / 1000.0

    @property
    def feature_dim(self) -> int:
        """Output dimension C."""
        return self.num_mel_bins + int(self.use_energy)

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for a signal of ``num_samples`` samples (Kaldi's rule)."""
        if self.snip_edges:
            if num_samples < self.window_size:
                return 0
            return 1 + (num_samples - self.window_size) // self.window_shift
        return (num_samples + self.window_shift // 2) // self.window_shift

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FbankConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FbankConfig fields {sorted(unknown)}")
        return cls(**data)

    def to_knf(self):
        """The equivalent ``kaldi_native_fbank.FbankOptions``."""
        import kaldi_native_fbank as knf

        self.validate()
        opts = knf.FbankOptions()
        fo = opts.frame_opts
        fo.samp_freq = float(self.sample_rate)
        fo.frame_length_ms = float(self.frame_length_ms)
        fo.frame_shift_ms = float(self.frame_shift_ms)
        fo.dither = float(self.dither)
        fo.preemph_coeff = float(self.preemph_coeff)
        fo.remove_dc_offset = self.remove_dc_offset
        # knf spells the Hann window "hanning", like Kaldi.
        fo.window_type = "hanning" if self.window_type == "hann" else self.window_type
        fo.blackman_coeff = float(self.blackman_coeff)
        fo.round_to_power_of_two = self.round_to_power_of_two
        fo.snip_edges = self.snip_edges
        mo = opts.mel_opts
        mo.num_bins = self.num_mel_bins
        mo.low_freq = float(self.low_freq)
        mo.high_freq = float(self.high_freq)
        opts.use_energy = self.use_energy
        opts.raw_energy = self.raw_energy
        opts.energy_floor = float(self.energy_floor)
        opts.use_power = self.use_power
        opts.use_log_fbank = self.use_log_fbank
        return opts


def _resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def _as_mono(samples) -> np.ndarray:
    """(S,), (1, S) or (channels, S) array/tensor -> float32 (S,); channels are averaged."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x[0] if x.shape[0] == 1 else x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"expected samples of shape (S,) or (channels, S), got {x.shape}")
    return np.ascontiguousarray(x)


def compute_fbank(samples, sample_rate: int, config: FbankConfig | None = None) -> np.ndarray:
    """Log-mel fbank of one utterance with kaldi-native-fbank.

    Args:
        samples: waveform in [-1, 1], shape (S,) or (channels, S) (channels are averaged).
        sample_rate: rate of ``samples`` in Hz; resampled (soxr) to ``config.sample_rate``
            when different.
        config: feature settings; defaults to ``FbankConfig()``.

    Returns:
        float32 array (T, C) with T = ``config.num_frames(S')`` for the S' samples at
        ``config.sample_rate``; (0, C) when the signal is shorter than half a shift.
    """
    config = config or FbankConfig()
    opts = config.to_knf()
    x = _as_mono(samples)
    if sample_rate != config.sample_rate:
        x = _resample(x, sample_rate, config.sample_rate)
    if config.waveform_scale != 1.0:
        x = x * np.float32(config.waveform_scale)
    import kaldi_native_fbank as knf

    try:
        online = knf.OnlineFbank(opts)
    except ValueError as e:
        if "num_mel_bins" not in str(e):
            raise
        # knf refuses filters that cover no FFT bin (e.g. AST's 128 bins on a 512-point
        # FFT: the lowest ones are narrower than a bin); torchaudio's kaldi.fbank, which
        # AST used, keeps them (all-zero, so log(eps)). TorchFbank computes the same.
        return _torch_fbank_one(x, config)
    online.accept_waveform(float(config.sample_rate), x)
    online.input_finished()
    n = online.num_frames_ready
    if n == 0:
        return np.zeros((0, config.feature_dim), dtype=np.float32)
    return np.stack([online.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)


_TORCH_FBANKS: dict[str, TorchFbank] = {}


def _torch_fbank_one(x: np.ndarray, config: FbankConfig) -> np.ndarray:
    """One utterance through :class:`TorchFbank` (float64 inside, so it matches knf where
    knf works), as float32 (T, C)."""
    key = repr(config)
    fb = _TORCH_FBANKS.get(key)
    if fb is None:  # the mel banks and window are built once per configuration
        fb = TorchFbank(dataclasses.replace(config, waveform_scale=1.0, compute_dtype="float64"))
        _TORCH_FBANKS[key] = fb
    with torch.no_grad():
        feats, lens = fb(torch.from_numpy(x).unsqueeze(0))
    return feats[0, : int(lens[0])].numpy().astype(np.float32, copy=False)


def mel_scale(freq_hz: np.ndarray | float) -> np.ndarray | float:
    """Kaldi/HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


def kaldi_mel_banks(
    num_bins: int, padded_window_size: int, sample_rate: int, low_freq: float, high_freq: float
) -> np.ndarray:
    """Triangular mel filters laid out as in Kaldi's ``MelBanks``.

    Filters are triangles whose edges are equally spaced on the HTK mel scale between
    ``low_freq`` and ``high_freq`` (<= 0 means relative to nyquist); a bin's weight is the
    triangle evaluated at the bin's mel value, and only bins strictly inside a triangle count.

    Returns:
        float64 array (num_bins, padded_window_size // 2 + 1); the nyquist column is zero
        because Kaldi only weighs the first padded_window_size // 2 FFT bins.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    num_fft_bins = padded_window_size // 2
    fft_bin_width = sample_rate / padded_window_size
    mel_low, mel_high = float(mel_scale(low_freq)), float(mel_scale(high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * np.arange(num_bins + 2, dtype=np.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = mel_scale(fft_bin_width * np.arange(num_fft_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = np.where(mel <= center, up, down)
    weights = np.where((mel > left) & (mel < right), weights, 0.0)
    out = np.zeros((num_bins, num_fft_bins + 1), dtype=np.float64)
    out[:, :num_fft_bins] = weights
    return out


def feature_window(window_type: str, length: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """Kaldi's analysis window of ``length`` samples as float64 (length,)."""
    i = np.arange(length, dtype=np.float64)
    a = 2.0 * math.pi / (length - 1)
    if window_type in ("hanning", "hann"):
        return 0.5 - 0.5 * np.cos(a * i)
    if window_type == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    if window_type == "povey":
        # Like Hann but goes to zero more gently at the edges; Kaldi's default.
        return np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    if window_type == "rectangular":
        return np.ones(length, dtype=np.float64)
    if window_type == "blackman":
        return blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    raise ValueError(f"unknown window_type {window_type!r}; expected one of {_WINDOW_TYPES}")


class TorchFbank(nn.Module):
    """Batched Kaldi-compatible log-mel fbank in pure PyTorch (runs on any device).

    Matches :func:`compute_fbank` (kaldi-native-fbank) to within 1e-3 on real audio (see
    the module docstring for the float32 noise floor); every utterance is framed using only
    its own ``lens[i]`` samples (edges reflected as Kaldi does), so the padding of a batch
    never leaks into its features. Computes in float32, or float64 for float64 input (or
    for any input with ``config.compute_dtype="float64"``, returning float32 features).

    Args:
        config: feature settings; defaults to ``FbankConfig()``. (The module takes the
            feature config itself so that it is the same object stored features and
            checkpoints describe.)
    """

    def __init__(self, config: FbankConfig | None = None) -> None:
        super().__init__()
        cfg = config or FbankConfig()
        cfg.validate()
        self.config = cfg
        self.window_size = cfg.window_size
        self.window_shift = cfg.window_shift
        self.padded_window_size = cfg.padded_window_size
        win = feature_window(cfg.window_type, cfg.window_size, cfg.blackman_coeff)
        mel = kaldi_mel_banks(
            cfg.num_mel_bins, cfg.padded_window_size, cfg.sample_rate, cfg.low_freq, cfg.high_freq
        )
        # Kept in float64 outside the module's buffers and cast per (device, dtype) on use:
        # they are a pure function of the config, and model-wide casts such as .half() must
        # not degrade them.
        self._window = torch.from_numpy(win)
        self._mel_banks = torch.from_numpy(mel.T.copy())  # (F, M)
        self._consts: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._consts:
            self._consts[key] = (
                self._window.to(device=device, dtype=dtype),
                self._mel_banks.to(device=device, dtype=dtype),
            )
        return self._consts[key]

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def num_frames(self, lens: torch.Tensor) -> torch.Tensor:
        """Frames per utterance for ``lens`` samples, int64 (N,)."""
        lens = lens.to(torch.int64)
        if self.config.snip_edges:
            n = 1 + torch.div(lens - self.window_size, self.window_shift, rounding_mode="floor")
            return torch.where(lens < self.window_size, torch.zeros_like(n), n)
        return torch.div(lens + self.window_shift // 2, self.window_shift, rounding_mode="floor")

    def forward(
        self,
        waveforms: torch.Tensor,
        lens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute log-mel features of a padded batch.

        Args:
            waveforms: float (N, S) samples in [-1, 1] at ``config.sample_rate``; float64
                input is computed in float64 (any input with ``compute_dtype="float64"``).
            lens: int64 (N,) valid samples per row; defaults to S for every row.
            generator: RNG for dither (only used when dither > 0).

        Returns:
            feats: (N, T, C) with T = max(feat_lens); frames past an utterance's end are 0.
            feat_lens: int64 (N,) frames per utterance.
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (N, S), got shape {tuple(waveforms.shape)}")
        if not waveforms.is_floating_point():
            raise ValueError(f"waveforms must be floating point, got {waveforms.dtype}")
        n_utt, max_len = waveforms.shape
        device = waveforms.device
        dtype = torch.float64 if waveforms.dtype == torch.float64 else torch.float32
        out_dtype = dtype  # "float64" computes in float64 but returns what "auto" returns
        if self.config.compute_dtype == "float64":
            dtype = torch.float64
        x = waveforms.to(dtype)
        if self.config.waveform_scale != 1.0:
            x = x * self.config.waveform_scale
        if lens is None:
            lens = torch.full((n_utt,), max_len, dtype=torch.int64, device=device)
        lens = lens.to(device=device, dtype=torch.int64)
        if lens.shape != (n_utt,):
            raise ValueError(f"lens must be (N,)=({n_utt},), got {tuple(lens.shape)}")
        if bool((lens > max_len).any()) or bool((lens < 0).any()):
            raise ValueError(f"lens must be in [0, {max_len}], got {lens.tolist()}")
        feat_lens = self.num_frames(lens)
        num_frames = int(feat_lens.max()) if n_utt > 0 else 0
        if num_frames == 0:
            return x.new_zeros(n_utt, 0, self.feature_dim, dtype=out_dtype), feat_lens

        window, mel_banks = self._constants(device, dtype)
        size, shift = self.window_size, self.window_shift
        first = 0 if self.config.snip_edges else shift // 2 - size // 2
        # Every frame of the batch lies inside [first, first + ext_len); map that span to
        # sample indices per utterance, reflecting at both ends of *that* utterance
        # (Kaldi: s < 0 -> -s - 1, s >= n -> 2n - 1 - s, repeated), which is the symmetric
        # extension with period 2n.
        ext_len = (num_frames - 1) * shift + size
        pos = torch.arange(first, first + ext_len, device=device, dtype=torch.int64)
        period = (2 * lens.clamp(min=1))[:, None]
        m = torch.remainder(pos[None, :], period)
        idx = torch.where(m < period // 2, m, period - 1 - m)
        idx = idx.clamp(max=max(max_len - 1, 0))
        if max_len == 0:
            x = x.new_zeros(n_utt, 1)
        ext = torch.gather(x, 1, idx)
        frames = ext.unfold(1, size, shift)  # (N, T, size)

        if self.config.dither > 0:
            noise = torch.randn(frames.shape, generator=generator, dtype=dtype, device="cpu")
            frames = frames + self.config.dither * noise.to(device)
        if self.config.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        log_energy = None
        if self.config.use_energy and self.config.raw_energy:
            log_energy = torch.log(frames.pow(2).sum(-1).clamp(min=_FLOAT_EPS))
        c = self.config.preemph_coeff
        if c != 0.0:
            frames = torch.cat(
                [frames[..., :1] * (1.0 - c), frames[..., 1:] - c * frames[..., :-1]], dim=-1
            )
        frames = frames * window
        if self.config.use_energy and not self.config.raw_energy:
            log_energy = torch.log(frames.pow(2).sum(-1).clamp(min=_FLOAT_EPS))

        spec = torch.fft.rfft(frames, n=self.padded_window_size, dim=-1)
        spec = spec.real.pow(2) + spec.imag.pow(2)
        if not self.config.use_power:
            spec = spec.sqrt()
        feats = torch.matmul(spec, mel_banks)
        if self.config.use_log_fbank:
            feats = torch.log(feats.clamp(min=_FLOAT_EPS))
        if log_energy is not None:
            if self.config.energy_floor > 0:
                log_energy = log_energy.clamp(min=math.log(self.config.energy_floor))
            feats = torch.cat([log_energy.unsqueeze(-1), feats], dim=-1)
        valid = torch.arange(num_frames, device=device)[None, :] < feat_lens[:, None]
        feats = feats.masked_fill(~valid.unsqueeze(-1), 0.0)
        if feats.dtype != out_dtype:
            feats = feats.to(out_dtype)
        return feats, feat_lens
