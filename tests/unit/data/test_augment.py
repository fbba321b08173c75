"""Speed perturbation and additive noise (array level and lazy cut transforms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from speechfm.data.augment import (
    AdditiveNoise,
    AddNoise,
    SpeedPerturb,
    add_noise,
    pink_noise,
    speed_perturb_copies,
    white_noise,
)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10 * math.log10(np.mean(clean**2) / np.mean(noise**2))


def _cuts(tmp_path, n: int = 3, sr: int = 16000):
    """n speech-like cuts (harmonic tones with an envelope) with full supervisions."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs, sups = [], []
    for i in range(n):
        dur = 0.5 + 0.25 * i
        t = np.arange(int(sr * dur)) / sr
        x = 0.2 * np.sin(2 * np.pi * 220 * (i + 1) * t) * np.hanning(t.size)
        path = tmp_path / f"utt{i}.wav"
        sf.write(str(path), x, sr, subtype="FLOAT")
        rec = Recording.from_file(path)
        recs.append(rec)
        sups.append(
            SupervisionSegment(
                id=rec.id,
                recording_id=rec.id,
                start=0.0,
                duration=rec.duration,
                text=f"word {i}",
                language="en",
                speaker=f"spk{i % 2}",
            )
        )
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    )


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 20.0, 40.0])
def test_add_noise_reaches_the_snr(snr):
    rng = np.random.default_rng(0)
    clean = (0.3 * np.sin(np.linspace(0, 300, 16000))).astype(np.float32)
    for noise in (white_noise(16000, rng), pink_noise(5000, rng)):  # the short one is tiled
        noisy = add_noise(clean, noise, snr)
        assert noisy.shape == clean.shape and noisy.dtype == np.float32
        assert abs(_snr_db(clean, noisy) - snr) < 0.1


def test_add_noise_multichannel_and_edge_cases():
    rng = np.random.default_rng(1)
    stereo = (0.1 * rng.standard_normal((2, 8000))).astype(np.float32)
    noisy = add_noise(stereo, rng.standard_normal(8000), 10.0)
    assert noisy.shape == (2, 8000) and abs(_snr_db(stereo, noisy) - 10.0) < 0.1
    silent = np.zeros(100, dtype=np.float32)
    np.testing.assert_array_equal(add_noise(silent, rng.standard_normal(100), 5.0), silent)
    with pytest.raises(ValueError, match="silent"):
        add_noise(stereo, np.zeros(50), 5.0)
    with pytest.raises(ValueError, match="empty"):
        add_noise(stereo, np.zeros(0), 5.0)


def test_noise_colours():
    rng = np.random.default_rng(2)
    n = 2**16
    for gen, slope in ((white_noise, 0.0), (pink_noise, -1.0)):
        x = gen(n, rng).astype(np.float64)
        assert x.shape == (n,) and abs(x.std() - 1.0) < 0.05
        psd = np.abs(np.fft.rfft(x)) ** 2
        f = np.arange(psd.size)
        band = (f > 10) & (f < n // 4)
        fitted = np.polyfit(np.log(f[band]), np.log(psd[band]), 1)[0]
        assert abs(fitted - slope) < 0.1  # power ~ f^0 (white) or f^-1 (pink)


def test_speed_perturb_durations_ids_speakers(tmp_path):
    cuts = _cuts(tmp_path)
    copies = speed_perturb_copies(cuts, (0.9, 1.0, 1.1)).to_eager()
    assert len(copies) == 9 and len(set(copies.ids)) == 9
    for cut in cuts:
        for factor in (0.9, 1.1):
            sp = copies[f"{cut.id}_sp{factor}"]
            assert sp.duration == pytest.approx(cut.duration / factor, abs=1e-3)
            audio = sp.load_audio()
            assert audio.shape == (1, sp.num_samples)
            assert abs(audio.shape[1] - cut.num_samples / factor) <= 1
            sup, orig = sp.supervisions[0], cut.supervisions[0]
            assert sup.speaker == orig.speaker and sup.text == orig.text
            assert sup.duration == pytest.approx(orig.duration / factor, abs=1e-3)
        assert copies[cut.id].duration == cut.duration


def test_speed_perturb_transform_is_seeded(tmp_path):
    cuts = _cuts(tmp_path, n=3)
    ids_a = [SpeedPerturb(seed=5)(cuts).ids for _ in range(1)][0]
    ids_b = SpeedPerturb(seed=5)(cuts).ids
    assert list(ids_a) == list(ids_b)
    seen = set()
    sp = SpeedPerturb((0.9, 1.1), seed=0)
    for _ in range(10):
        out = sp(cuts)
        assert len(out) == 3
        seen.update(i.rsplit("_sp", 1)[1] for i in out.ids)
    assert seen == {"0.9", "1.1"}
    assert list(SpeedPerturb((0.9,), p=0.0, seed=0)(cuts).ids) == list(cuts.ids)


def test_precomputed_features_are_dropped_on_augmentation(tmp_path):
    from lhotse import NumpyFilesWriter

    from speechfm.features.knf_extractor import KnfFbankExtractor

    cuts = (
        _cuts(tmp_path, n=2)
        .compute_and_store_features(
            KnfFbankExtractor(), tmp_path / "f", storage_type=NumpyFilesWriter
        )
        .to_eager()
    )
    assert all(c.has_features for c in cuts)
    for out in (SpeedPerturb((1.1,), seed=0)(cuts), AddNoise(p=1.0, seed=0)(cuts)):
        assert not any(c.has_features for c in out)
    assert all(c.has_features for c in cuts)  # inputs left alone


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_add_noise_cut_transform_snr(tmp_path, kind):
    cuts = _cuts(tmp_path)
    noisy = AddNoise(kind=kind, snr_range=(3.0, 15.0), p=1.0, seed=1)(cuts)
    assert list(noisy.ids) == list(cuts.ids)
    for clean, cut in zip(cuts, noisy, strict=True):
        (t,) = [t for t in cut.recording.transforms if isinstance(t, AdditiveNoise)]
        assert 3.0 <= t.snr_db <= 15.0 and t.kind == kind
        x, y = clean.load_audio()[0], cut.load_audio()[0]
        assert abs(_snr_db(x, y) - t.snr_db) < 0.1
        np.testing.assert_array_equal(y, cut.load_audio()[0])  # same noise on every load


def test_add_noise_from_noise_cuts_and_manifest_round_trip(tmp_path):
    from lhotse import CutSet, Recording, RecordingSet

    cuts = _cuts(tmp_path)
    npath = tmp_path / "noise8k.wav"  # shorter than the cuts and at another rate
    sf.write(str(npath), 0.1 * np.random.default_rng(3).standard_normal(2000), 8000)
    noise_cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings([Recording.from_file(npath)])
    )
    noisy = AddNoise(noise_cuts=noise_cuts, snr_range=(5.0, 5.0), p=1.0, seed=2)(cuts)
    for clean, cut in zip(cuts, noisy, strict=True):
        assert abs(_snr_db(clean.load_audio()[0], cut.load_audio()[0]) - 5.0) < 0.1
    path = tmp_path / "noisy.jsonl.gz"
    noisy.to_file(path)
    back = CutSet.from_file(path).to_eager()
    for a, b in zip(noisy, back, strict=True):
        np.testing.assert_array_equal(a.load_audio(), b.load_audio())


def test_add_noise_probability_and_seed(tmp_path):
    cuts = _cuts(tmp_path, n=3)
    assert all(not c.recording.transforms for c in AddNoise(p=0.0, seed=0)(cuts))
    snrs = []
    for _ in range(2):
        out = AddNoise(p=1.0, seed=9)(cuts)
        snrs.append([c.recording.transforms[0].snr_db for c in out])
    assert snrs[0] == snrs[1]
    with pytest.raises(ValueError, match="snr_range"):
        AddNoise(snr_range=(10.0, 5.0))
