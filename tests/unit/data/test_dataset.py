"""AsrDataset: collation, precomputed vs on-the-fly features, transforms, bad items."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from speechfm.data.augment import SpeedPerturb
from speechfm.data.dataset import AsrDataset
from speechfm.errors import DataError
from speechfm.features.fbank import FbankConfig, compute_fbank
from speechfm.features.specaug import SpecAugment


def _make_cuts(tmp_path, *, corrupt: bool = True):
    """Five good utterances (one at 8 kHz) plus, optionally, a corrupt file and a NaN file."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    rng = np.random.default_rng(0)
    recs, sups = [], []
    specs = [
        ("a", 16000, 0.6),
        ("b", 16000, 1.3),
        ("c", 8000, 0.9),
        ("d", 16000, 0.4),
        ("e", 16000, 1.0),
    ]
    for i, (name, sr, dur) in enumerate(specs):
        t = np.arange(int(sr * dur)) / sr
        x = 0.2 * np.sin(2 * np.pi * 300 * (i + 1) * t) + 0.01 * rng.standard_normal(t.size)
        path = tmp_path / f"{name}.wav"
        sf.write(str(path), x, sr)
        recs.append(Recording.from_file(path))
        custom = {"ipa": f"w ɜː d | {name}"} if i % 2 == 0 else None
        sups.append(
            SupervisionSegment(
                id=name,
                recording_id=name,
                start=0.0,
                duration=recs[-1].duration,
                text=f"text {name}",
                language="en" if i < 3 else "pl",
                speaker=f"s{i}",
                custom=custom,
            )
        )
    if corrupt:
        good = tmp_path / "bad.wav"
        sf.write(str(good), 0.1 * rng.standard_normal(8000), 16000)
        recs.append(Recording.from_file(good))
        good.write_bytes(b"RIFF....garbage, not a wave file" * 10)  # corrupted after indexing
        sups.append(
            SupervisionSegment(id="bad", recording_id="bad", start=0.0, duration=0.5, text="x")
        )
        nan_path = tmp_path / "nan.wav"
        y = 0.1 * rng.standard_normal(8000)
        y[100] = np.nan
        sf.write(str(nan_path), y, 16000, subtype="FLOAT")
        recs.append(Recording.from_file(nan_path))
        sups.append(
            SupervisionSegment(id="nan", recording_id="nan", start=0.0, duration=0.5, text="y")
        )
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    ).to_eager()


def test_collate_on_the_fly(tmp_path):
    cuts = _make_cuts(tmp_path, corrupt=False)
    batch = AsrDataset()[cuts]
    n = len(cuts)
    assert batch["features"].shape[0] == n and batch["features"].shape[2] == 80
    assert batch["features"].dtype == torch.float32 and batch["x_lens"].dtype == torch.int64
    assert batch["features"].shape[1] == int(batch["x_lens"].max())
    assert batch["cut_ids"] == list(cuts.ids)
    assert batch["texts"] == [f"text {c.id.split('-')[0]}" for c in cuts]
    assert batch["langs"] == ["en", "en", "en", "pl", "pl"]
    assert batch["ipa"][0] == "w ɜː d | a" and batch["ipa"][1] is None
    assert batch["skipped_cut_ids"] == []
    for i, cut in enumerate(cuts):
        ref = compute_fbank(cut.load_audio(), cut.sampling_rate)
        assert int(batch["x_lens"][i]) == ref.shape[0] == round(cut.duration * 100)
        torch.testing.assert_close(batch["features"][i, : ref.shape[0]], torch.from_numpy(ref))
        assert (batch["features"][i, ref.shape[0] :] == 0).all()


def test_bad_items_are_skipped_and_reported(tmp_path, caplog):
    cuts = _make_cuts(tmp_path)
    ds = AsrDataset()
    with caplog.at_level(logging.WARNING, logger="speechfm.data.dataset"):
        batch = ds[cuts]
    bad = [c.id for c in cuts if c.id.startswith(("bad", "nan"))]
    assert len(bad) == 2
    assert ds.skipped == 2
    assert batch["skipped_cut_ids"] == bad
    assert batch["features"].shape[0] == len(cuts) - 2 == len(batch["texts"])
    assert not set(batch["cut_ids"]) & set(bad)
    for cut_id in bad:
        assert any(cut_id in r.getMessage() for r in caplog.records)
    assert "NaN" in " ".join(r.getMessage() for r in caplog.records)

    only_bad = ds[cuts.subset(cut_ids=bad)]
    assert only_bad["features"].shape == (0, 0, 80) and only_bad["x_lens"].shape == (0,)
    assert ds.skipped == 4


def test_precomputed_features_are_used(tmp_path):
    from lhotse import NumpyFilesWriter

    from speechfm.features.knf_extractor import KnfFbankExtractor

    cuts = _make_cuts(tmp_path, corrupt=False)
    stored = cuts.compute_and_store_features(
        KnfFbankExtractor(), tmp_path / "feats", storage_type=NumpyFilesWriter
    ).to_eager()
    # Remove the audio: precomputed features must be enough.
    for path in tmp_path.glob("*.wav"):
        path.unlink()
    batch = AsrDataset()[stored]
    assert batch["skipped_cut_ids"] == []
    for i, cut in enumerate(stored):
        feats = cut.load_features()
        assert int(batch["x_lens"][i]) == feats.shape[0]
        torch.testing.assert_close(batch["features"][i, : feats.shape[0]], torch.from_numpy(feats))
    with pytest.raises(DataError, match="dimension 80"):
        AsrDataset(fbank_config=FbankConfig(num_mel_bins=40))[stored]


def test_cut_and_input_transforms(tmp_path):
    cuts = _make_cuts(tmp_path, corrupt=False)
    plain = AsrDataset()[cuts]
    ds = AsrDataset(
        cut_transforms=[SpeedPerturb((1.1,), seed=0)],
        input_transforms=[SpecAugment(num_time_masks=0, freq_mask_width=10)],
    )
    batch = ds[cuts]
    assert all(i.endswith("_sp1.1") for i in batch["cut_ids"])
    assert batch["texts"] == plain["texts"] and batch["langs"] == plain["langs"]
    expected = torch.round(plain["x_lens"].double() / 1.1).long()
    assert (batch["x_lens"] - expected).abs().max() <= 1
    # SpecAugment masked some whole frequency bands with 0
    zero_cols = (batch["features"] == 0).all(dim=1)  # (N, C)
    assert zero_cols.any()


def test_with_sampler_and_dataloader(tmp_path):
    from speechfm.data.sampler import make_sampler

    cuts = _make_cuts(tmp_path)
    sampler = make_sampler(cuts, max_duration=2.0, seed=0)
    loader = torch.utils.data.DataLoader(
        AsrDataset(), sampler=sampler, batch_size=None, num_workers=1
    )
    seen, skipped = [], []
    for batch in loader:
        assert batch["features"].shape[0] == len(batch["cut_ids"])
        seen += batch["cut_ids"]
        skipped += batch["skipped_cut_ids"]
    assert sorted(seen + skipped) == sorted(cuts.ids)
    assert sorted(skipped) == sorted(c.id for c in cuts if c.id.startswith(("bad", "nan")))


def _recording(path, samples, sr=16000, **kwargs):
    from lhotse import Recording

    sf.write(str(path), samples, sr, **kwargs)
    return Recording.from_file(path)


def test_missing_empty_short_and_mismatched_audio_are_skipped(tmp_path, caplog):
    """Each kind of bad audio file costs its own cut only, reported by cut id."""
    from lhotse import CutSet, RecordingSet

    good = _make_cuts(tmp_path, corrupt=False)
    rng = np.random.default_rng(1)
    recs = []
    recs.append(_recording(tmp_path / "missing.wav", 0.1 * rng.standard_normal(8000)))
    (tmp_path / "missing.wav").unlink()  # deleted after indexing
    recs.append(_recording(tmp_path / "empty.wav", np.zeros(0)))
    recs.append(_recording(tmp_path / "short.wav", 0.1 * rng.standard_normal(30)))  # < 1 frame
    recs.append(_recording(tmp_path / "trunc.wav", 0.1 * rng.standard_normal(16000)))
    sf.write(str(tmp_path / "trunc.wav"), 0.1 * rng.standard_normal(4000), 16000)  # 1 s -> 0.25 s
    recs.append(_recording(tmp_path / "zero.wav", 0.1 * rng.standard_normal(8000)))
    (tmp_path / "zero.wav").write_bytes(b"")  # truncated to nothing after indexing
    y = 0.1 * rng.standard_normal(8000)
    y[7] = np.inf
    recs.append(_recording(tmp_path / "inf.wav", y, subtype="FLOAT"))
    bad_cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs)).to_eager()
    cuts = CutSet.from_cuts(list(good) + list(bad_cuts))
    bad = list(bad_cuts.ids)

    ds = AsrDataset()
    with caplog.at_level(logging.WARNING, logger="speechfm.data.dataset"):
        batch = ds[cuts]
    assert batch["skipped_cut_ids"] == bad
    assert ds.skipped == len(bad) == 6
    assert batch["cut_ids"] == list(good.ids)
    assert batch["features"].shape[0] == len(good)
    messages = [r.getMessage() for r in caplog.records]
    for cut_id in bad:
        assert sum(cut_id in m for m in messages) == 1, (cut_id, messages)
    text = "\n".join(messages)
    assert "empty audio" in text and "no feature frames" in text and "NaN or Inf" in text
    assert "cannot load audio" in text


@pytest.mark.parametrize("storage", ["numpy", "lilcom"])
def test_bad_precomputed_features_are_skipped(tmp_path, caplog, storage):
    """Missing, zero-byte, garbage, truncated and NaN feature files are bad items."""
    from lhotse import LilcomFilesWriter, NumpyFilesWriter

    from speechfm.features.knf_extractor import KnfFbankExtractor

    writer = {"numpy": NumpyFilesWriter, "lilcom": LilcomFilesWriter}[storage]
    cuts = _make_cuts(tmp_path, corrupt=False)
    stored = cuts.compute_and_store_features(
        KnfFbankExtractor(), tmp_path / "feats", storage_type=writer
    ).to_eager()
    for path in tmp_path.glob("*.wav"):
        path.unlink()  # no fallback to the audio
    files = {c.id: tmp_path / "feats" / c.features.storage_key for c in stored}
    ids = list(stored.ids)
    files[ids[0]].unlink()
    files[ids[1]].write_bytes(b"")
    files[ids[2]].write_bytes(b"not a feature matrix, just garbage " * 20)
    files[ids[3]].write_bytes(files[ids[3]].read_bytes()[:-200])
    bad = ids[:4]
    if storage == "numpy":
        feats = stored[ids[4]].load_features()
        feats[3, 5] = np.nan
        np.save(files[ids[4]], feats)
        bad.append(ids[4])

    ds = AsrDataset()
    with caplog.at_level(logging.WARNING, logger="speechfm.data.dataset"):
        batch = ds[stored]
    assert batch["skipped_cut_ids"] == bad
    assert ds.skipped == len(bad)
    assert batch["cut_ids"] == [i for i in ids if i not in bad]
    messages = [r.getMessage() for r in caplog.records]
    for cut_id in bad:
        assert any(cut_id in m for m in messages), (cut_id, messages)
    assert "cannot read features" in "\n".join(messages)


@pytest.mark.parametrize("exc", [TypeError, AttributeError, KeyError, NameError, AssertionError])
def test_programming_errors_in_feature_code_propagate(tmp_path, monkeypatch, exc):
    """A bug is not a bad item: it must fail the batch instead of skipping every cut."""
    import speechfm.features.fbank as fbank

    def broken(*args, **kwargs):
        raise exc("a bug in the feature code")

    monkeypatch.setattr(fbank, "compute_fbank", broken)
    ds = AsrDataset()
    with pytest.raises(exc, match="a bug"):
        ds[_make_cuts(tmp_path, corrupt=False)]
    assert ds.skipped == 0


@pytest.mark.parametrize("method", ["load_audio", "load_features"])
@pytest.mark.parametrize("exc", [TypeError, AttributeError])
def test_programming_errors_in_the_loader_propagate(tmp_path, monkeypatch, method, exc):
    from lhotse import NumpyFilesWriter
    from lhotse.cut import MonoCut

    from speechfm.features.knf_extractor import KnfFbankExtractor

    cuts = _make_cuts(tmp_path, corrupt=False)
    if method == "load_features":
        cuts = cuts.compute_and_store_features(
            KnfFbankExtractor(), tmp_path / "feats", storage_type=NumpyFilesWriter
        ).to_eager()

    def broken(self, *args, **kwargs):
        raise exc("a bug in the loader")

    monkeypatch.setattr(MonoCut, method, broken)
    ds = AsrDataset()
    with pytest.raises(exc, match="a bug"):
        ds[cuts]
    assert ds.skipped == 0
