"""Kaldi-compatible fbank: TorchFbank vs kaldi-native-fbank, frame counts, padding, lhotse."""

from __future__ import annotations

import math

import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from lhotse.utils import compute_num_frames_from_samples

from speechfm.features.fbank import (
    FbankConfig,
    TorchFbank,
    compute_fbank,
    kaldi_mel_banks,
)
from speechfm.features.knf_extractor import KnfFbankExtractor

# A bin counts as "above the float32 noise floor" when it is within 80 dB of its frame's
# total mel energy. Deeper bins (e.g. above 4 kHz in upsampled 8 kHz FSDD audio) are
# rounding noise in knf's float32 FFT itself: knf differs from an exact float64 computation
# there by up to ~3e-3, so no implementation can match it tighter than that.
DEPTH_80DB = 8.0 * math.log(10.0)


def _real_audio(shared_data, n_fsdd: int = 12, n_sc: int = 12) -> list[tuple[str, np.ndarray]]:
    """A spread of FSDD (8 kHz) and Speech Commands (16 kHz) files, resampled to 16 kHz."""
    fsdd = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))
    sc = sorted((shared_data / "speech_commands_mini" / "speech_commands_v0.01").glob("*/*.wav"))
    if not fsdd or not sc:
        pytest.skip("real recordings are missing from shared data")
    picks = fsdd[:: max(1, len(fsdd) // n_fsdd)][:n_fsdd] + sc[:: max(1, len(sc) // n_sc)][:n_sc]
    out = []
    for path in picks:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != 16000:
            x = soxr.resample(x, sr, 16000).astype(np.float32)
        out.append((path.name, x))
    return out


def _assert_matches_knf(out: np.ndarray, ref: np.ndarray, name: str, min_resolved: float = 0.7):
    """<= 1e-3 on every bin within 80 dB of its frame's energy; <= 5e-3 on all bins."""
    assert out.shape == ref.shape, name
    if ref.size == 0:
        return
    diff = np.abs(np.asarray(out, dtype=np.float64) - ref)
    depth = np.log(np.exp(ref.astype(np.float64)).sum(1, keepdims=True)) - ref
    resolved = depth < DEPTH_80DB
    assert resolved.mean() > min_resolved, name  # most bins are checked at 1e-3
    assert diff[resolved].max() <= 1e-3, (name, diff[resolved].max())
    assert diff.max() <= 5e-3, (name, diff.max())
    assert diff.mean() <= 1e-4, (name, diff.mean())


def _numpy_reference(x: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Kaldi's algorithm spelled out frame by frame in float64 (povey, snip_edges=False)."""
    size, shift, fft = cfg.window_size, cfg.window_shift, cfg.padded_window_size
    n = x.shape[0]
    i = np.arange(size)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * i / (size - 1))) ** 0.85
    mel = kaldi_mel_banks(cfg.num_mel_bins, fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq)
    rows = []
    for t in range(cfg.num_frames(n)):
        frame = np.empty(size)
        for k in range(size):
            s = t * shift + shift // 2 - size // 2 + k
            while s < 0 or s >= n:  # Kaldi's reflection loop
                s = -s - 1 if s < 0 else 2 * n - 1 - s
            frame[k] = x[s]
        frame -= frame.mean()
        frame = np.concatenate([[frame[0] * (1 - 0.97)], frame[1:] - 0.97 * frame[:-1]]) * window
        power = np.abs(np.fft.rfft(frame, fft)) ** 2
        rows.append(np.log(np.maximum(mel @ power, np.finfo(np.float32).eps)))
    return np.array(rows).reshape(-1, cfg.num_mel_bins)


def test_mel_banks_match_knf():
    cfg = FbankConfig()
    opts = cfg.to_knf()
    ref = np.array(knf.MelBanks(opts.mel_opts, opts.frame_opts).get_matrix())
    mine = kaldi_mel_banks(80, 512, 16000, 20.0, 0.0)
    assert mine.shape == ref.shape == (80, 257)
    # knf builds them in float32
    np.testing.assert_allclose(mine, ref, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_knf_on_real_audio(shared_data, dtype):
    cfg = FbankConfig()
    fb = TorchFbank(cfg)
    for name, x in _real_audio(shared_data):
        ref = compute_fbank(x, 16000, cfg)
        out, lens = fb(torch.from_numpy(x)[None].to(dtype))
        assert lens.tolist() == [ref.shape[0]] and out.shape == (1, ref.shape[0], 80), name
        # FSDD (8 kHz upsampled) has an empty 4-8 kHz band: ~22% of bins are unresolved.
        _assert_matches_knf(out[0].double().numpy(), ref, name, min_resolved=0.7)


def test_torch_float64_is_exact_kaldi(shared_data):
    """Against Kaldi's algorithm in float64, every bin agrees, however deep."""
    cfg = FbankConfig()
    fb = TorchFbank(cfg)
    rng = np.random.default_rng(0)
    signals = _real_audio(shared_data, n_fsdd=2, n_sc=2)
    # Shorter than half a window: the reflection wraps around several times.
    signals += [("short", rng.standard_normal(n) * 0.1) for n in (80, 150, 399)]
    for name, x in signals:
        out, _ = fb(torch.from_numpy(np.asarray(x, dtype=np.float64))[None])
        np.testing.assert_allclose(
            out[0].numpy(), _numpy_reference(x, cfg), atol=1e-6, err_msg=name
        )


def test_torch_matches_knf_on_random_lengths():
    cfg = FbankConfig()
    fb = TorchFbank(cfg)
    rng = np.random.default_rng(1)
    lengths = [1, 2, 5, 79, 80, 81, 199, 200, 201, 399, 400, 401] + rng.integers(
        402, 40000, size=12
    ).tolist()
    for n in lengths:
        t = np.arange(n) / 16000
        x = 0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 7000) * t)
        x = x.astype(np.float32)
        ref = compute_fbank(x, 16000, cfg)
        out, lens = fb(torch.from_numpy(x)[None])
        assert out.shape[1] == ref.shape[0] == int(lens[0]), n
        _assert_matches_knf(out[0].numpy(), ref, f"length {n}", min_resolved=0.9)


@pytest.mark.parametrize(
    "overrides",
    [
        {"snip_edges": True},
        {"window_type": "hamming", "round_to_power_of_two": False},
        {"window_type": "blackman", "low_freq": 60.0, "high_freq": -400.0},
        {"use_energy": True, "raw_energy": False, "energy_floor": 1.0},
        {"use_energy": True},
        {"num_mel_bins": 40, "sample_rate": 8000, "remove_dc_offset": False},
    ],
)
def test_options_match_knf(overrides):
    cfg = FbankConfig(**overrides)
    fb = TorchFbank(cfg)
    x = (0.1 * np.random.default_rng(2).standard_normal(7777)).astype(np.float32)
    ref = compute_fbank(x, cfg.sample_rate, cfg)
    out, _ = fb(torch.from_numpy(x)[None])
    assert out.shape[1:] == ref.shape and ref.shape[1] == cfg.feature_dim
    _assert_matches_knf(out[0].numpy(), ref, str(overrides), min_resolved=0.9)


@pytest.mark.parametrize("snip_edges", [False, True])
def test_frame_counts_agree_everywhere(snip_edges):
    cfg = FbankConfig(snip_edges=snip_edges)
    fb = TorchFbank(cfg)
    lengths = list(range(0, 1300, 13)) + [16000, 16079, 16080, 16081]
    ours = fb.num_frames(torch.tensor(lengths)).tolist()
    for n, t in zip(lengths, ours, strict=True):
        online = knf.OnlineFbank(cfg.to_knf())
        online.accept_waveform(16000.0, np.zeros(n, dtype=np.float32))
        online.input_finished()
        assert t == online.num_frames_ready == cfg.num_frames(n), n
        if not snip_edges:  # the rule lhotse's feature manifests assume
            assert t == compute_num_frames_from_samples(n, cfg.frame_shift, 16000)


def test_padding_never_changes_features():
    fb = TorchFbank(FbankConfig())
    rng = np.random.default_rng(3)
    lengths = [16000, 401, 5000, 80, 12345]
    singles = []
    batch = torch.from_numpy(rng.uniform(-5, 5, size=(len(lengths), 16000)).astype(np.float32))
    for i, n in enumerate(lengths):
        x = torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32))
        batch[i, :n] = x
        singles.append(fb(x[None])[0][0])
    feats, feat_lens = fb(batch, torch.tensor(lengths))
    assert feats.shape == (5, 100, 80)
    assert feat_lens.tolist() == [100, 3, 31, 1, 77]
    for i, single in enumerate(singles):
        n = int(feat_lens[i])
        torch.testing.assert_close(feats[i, :n], single, atol=1e-5, rtol=0)
        assert (feats[i, n:] == 0).all()


def test_empty_and_invalid_inputs():
    fb = TorchFbank(FbankConfig())
    feats, lens = fb(torch.zeros(2, 50), torch.tensor([50, 0]))
    assert feats.shape == (2, 0, 80) and lens.tolist() == [0, 0]
    with pytest.raises(ValueError, match="lens"):
        fb(torch.zeros(1, 100), torch.tensor([101]))
    with pytest.raises(ValueError, match=r"\(N, S\)"):
        fb(torch.zeros(100))
    with pytest.raises(ValueError, match="window_type"):
        FbankConfig(window_type="kaiser").validate()
    with pytest.raises(ValueError, match="high_freq"):
        FbankConfig(low_freq=9000.0).validate()


def test_dither_is_seeded():
    fb = TorchFbank(FbankConfig(dither=1e-3))
    x = torch.zeros(1, 4000)
    a = fb(x, generator=torch.Generator().manual_seed(0))[0]
    b = fb(x, generator=torch.Generator().manual_seed(0))[0]
    c = fb(x, generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert a.mean() > math.log(np.finfo(np.float32).eps) + 1  # dither lifted silence


def test_compute_fbank_resamples_and_mixes_channels():
    rng = np.random.default_rng(4)
    x16 = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    x8 = soxr.resample(x16, 16000, 8000).astype(np.float32)
    feats = compute_fbank(x8, 8000)
    assert feats.shape == (100, 80) and feats.dtype == np.float32
    stereo = np.stack([x16, x16])
    np.testing.assert_allclose(compute_fbank(stereo, 16000), compute_fbank(x16, 16000), atol=1e-5)


def test_lhotse_extractor_stores_features(tmp_path):
    from lhotse import CutSet, LilcomChunkyWriter, Recording, RecordingSet
    from lhotse.features.base import FeatureExtractor

    rng = np.random.default_rng(5)
    recs = []
    for i, (sr, n) in enumerate([(16000, 12345), (8000, 7000)]):
        path = tmp_path / f"u{i}.wav"
        sf.write(str(path), 0.1 * rng.standard_normal(n), sr)
        recs.append(Recording.from_file(path))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs))
    extractor = KnfFbankExtractor()
    with_feats = cuts.compute_and_store_features(
        extractor, tmp_path / "feats", num_jobs=1, storage_type=LilcomChunkyWriter
    ).to_eager()
    for cut in with_feats:
        assert cut.has_features and cut.features.type == "speechfm-knf-fbank"
        stored = cut.load_features()
        direct = compute_fbank(cut.load_audio(), cut.sampling_rate)
        assert stored.shape == (cut.num_frames, 80)
        assert abs(stored.shape[0] - direct.shape[0]) <= 1
        t = min(stored.shape[0], direct.shape[0])
        # lilcom is lossy (a few thousandths on log-mel values)
        np.testing.assert_allclose(stored[:t], direct[:t], atol=0.05)
    again = FeatureExtractor.from_dict(extractor.to_dict())
    assert isinstance(again, KnfFbankExtractor) and again.config == extractor.config
    with pytest.raises(ValueError, match="snip_edges"):
        KnfFbankExtractor(FbankConfig(snip_edges=True))


@pytest.mark.gpu
def test_torch_fbank_on_gpu_matches_cpu():
    fb = TorchFbank(FbankConfig())
    rng = np.random.default_rng(6)
    x = torch.from_numpy((0.1 * rng.standard_normal((3, 20000))).astype(np.float32))
    lens = torch.tensor([20000, 15000, 900])
    cpu, cpu_lens = fb(x, lens)
    gpu, gpu_lens = fb(x.cuda(), lens.cuda())
    assert gpu.is_cuda and torch.equal(gpu_lens.cpu(), cpu_lens)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-4, rtol=0)
