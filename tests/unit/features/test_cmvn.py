"""Global CMVN: statistics against numpy, CutSet accumulation, JSON round trip, module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechfm.errors import DataError
from speechfm.features.cmvn import CmvnStats, GlobalCMVN
from speechfm.features.fbank import compute_fbank


def _chunks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Offsets far from zero and unequal scales stress the variance update.
    return [
        (rng.standard_normal((int(n), 5)) * [1, 2, 3, 0.1, 10] + [100, -5, 0, 7, 1e3]).astype(
            np.float32
        )
        for n in rng.integers(0, 300, size=20)
    ]


def test_stats_match_numpy():
    chunks = _chunks()
    stats = CmvnStats()
    for c in chunks:
        stats.update(c)
    allf = np.concatenate(chunks).astype(np.float64)
    assert stats.count == allf.shape[0] and stats.num_utterances == len(chunks)
    np.testing.assert_allclose(stats.mean, allf.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, allf.var(0), rtol=1e-9)


def test_merge_equals_single_pass():
    chunks = _chunks(1)
    a, b, whole = CmvnStats(), CmvnStats(), CmvnStats()
    for i, c in enumerate(chunks):
        (a if i % 2 else b).update(c)
        whole.update(c)
    a.merge(b)
    assert a.count == whole.count and a.num_utterances == whole.num_utterances
    np.testing.assert_allclose(a.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(a.var, whole.var, rtol=1e-9)


def _tiny_cuts(tmp_path, n: int = 4):
    from lhotse import CutSet, Recording, RecordingSet

    rng = np.random.default_rng(2)
    recs = []
    for i in range(n):
        path = tmp_path / f"w{i}.wav"
        sf.write(str(path), (0.05 * (i + 1)) * rng.standard_normal(4000 + 1500 * i), 16000)
        recs.append(Recording.from_file(path))
    return CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs))


def test_from_cuts_on_the_fly_and_precomputed(tmp_path):
    from lhotse import NumpyFilesWriter

    from speechfm.features.knf_extractor import KnfFbankExtractor

    cuts = _tiny_cuts(tmp_path)
    feats = [compute_fbank(c.load_audio(), c.sampling_rate) for c in cuts]
    ref = np.concatenate(feats).astype(np.float64)

    cmvn = GlobalCMVN.from_cuts(cuts)
    assert cmvn.num_frames == ref.shape[0] and cmvn.num_utterances == 4 and cmvn.dim == 80
    np.testing.assert_allclose(cmvn.mean.numpy(), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(cmvn.var.numpy(), ref.var(0), rtol=1e-5)

    stored = cuts.compute_and_store_features(
        KnfFbankExtractor(), tmp_path / "feats", storage_type=NumpyFilesWriter
    ).to_eager()
    from_stored = GlobalCMVN.from_cuts(stored)
    np.testing.assert_allclose(from_stored.mean.numpy(), ref.mean(0), rtol=1e-6)

    first_two = GlobalCMVN.from_cuts(cuts, max_cuts=2)
    assert first_two.num_frames == feats[0].shape[0] + feats[1].shape[0]


def test_from_cuts_names_a_bad_cut(tmp_path):
    cuts = _tiny_cuts(tmp_path, n=2)
    (tmp_path / "w1.wav").write_bytes(b"not audio at all")
    with pytest.raises(DataError, match="w1"):
        GlobalCMVN.from_cuts(cuts)


def test_save_load_round_trip_and_normalise(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 50, 80)) * 4.0 + 2.5
    cmvn = GlobalCMVN.from_features([x[i] for i in range(3)])
    path = tmp_path / "sub" / "cmvn.json"
    cmvn.save(path)
    data = json.loads(path.read_text())
    assert data["kind"] == "global_cmvn" and data["dim"] == 80 and data["num_frames"] == 150
    back = GlobalCMVN.load(path)
    torch.testing.assert_close(back.mean, cmvn.mean, rtol=0, atol=0)
    torch.testing.assert_close(back.var, cmvn.var, rtol=0, atol=0)

    y = back(torch.from_numpy(x).float())
    assert y.shape == (3, 50, 80) and y.dtype == torch.float32
    flat = y.reshape(-1, 80).double()
    torch.testing.assert_close(
        flat.mean(0), torch.zeros(80, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        flat.var(0, unbiased=False), torch.ones(80, dtype=torch.float64), atol=1e-4, rtol=0
    )

    lens = torch.tensor([50, 20, 0])
    y = back(torch.from_numpy(x).float(), lens)
    assert (y[1, 20:] == 0).all() and (y[2] == 0).all() and (y[0] != 0).any()


def test_constant_dimension_is_floored():
    feats = np.zeros((10, 3))
    feats[:, 0] = np.arange(10)
    cmvn = GlobalCMVN.from_features([feats], var_floor=1e-4)
    y = cmvn(torch.ones(1, 2, 3))
    assert torch.isfinite(y).all() and y[0, 0, 1] == pytest.approx(100.0)


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        GlobalCMVN.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something"}))
    with pytest.raises(DataError, match="other.json"):
        GlobalCMVN.load(other)
    with pytest.raises(DataError, match="no feature frames"):
        GlobalCMVN.from_features([np.zeros((0, 80))])
