"""``speechfm features compute`` and ``speechfm features cmvn`` on a tiny generated set."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from speechfm.cli import main


def _write_cuts(tmp_path):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    rng = np.random.default_rng(0)
    recs, sups = [], []
    for i, (sr, dur) in enumerate([(16000, 0.7), (16000, 1.2), (8000, 0.5), (16000, 0.3)]):
        t = np.arange(int(sr * dur)) / sr
        x = (
            0.3 * np.sin(2 * np.pi * 250 * (i + 1) * t)
            if i % 2
            else 0.1 * rng.standard_normal(t.size)
        )
        path = tmp_path / "wav" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), x, sr)
        rec = Recording.from_file(path)
        recs.append(rec)
        sups.append(
            SupervisionSegment(
                id=rec.id,
                recording_id=rec.id,
                start=0.0,
                duration=rec.duration,
                text=f"utt {i}",
                language="en",
                speaker="s",
            )
        )
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    )
    path = tmp_path / "cuts_train.jsonl.gz"
    cuts.to_file(path)
    return path


def test_compute_then_cmvn(tmp_path, capsys):
    from lhotse import CutSet

    from speechfm.features.fbank import compute_fbank

    cuts_path = _write_cuts(tmp_path)
    out_cuts, storage = tmp_path / "feats" / "cuts_train.jsonl.gz", tmp_path / "feats" / "store"
    rc = main(
        [
            "features",
            "compute",
            "--cuts",
            str(cuts_path),
            "--out-cuts",
            str(out_cuts),
            "--storage",
            str(storage),
            "--nj",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "4 cuts" in capsys.readouterr().out
    cuts = CutSet.from_file(out_cuts).to_eager()
    assert len(cuts) == 4 and any(storage.iterdir())
    frames = []
    for cut in cuts:
        assert cut.has_features and cut.features.storage_type == "lilcom_chunky"
        feats = cut.load_features()
        assert feats.shape == (round(cut.duration * 100), 80)
        ref = compute_fbank(cut.load_audio(), cut.sampling_rate)
        t = min(len(ref), len(feats))
        np.testing.assert_allclose(feats[:t], ref[:t], atol=0.05)  # lilcom is lossy
        assert cut.supervisions[0].text.startswith("utt")
        frames.append(feats)

    cmvn_path = tmp_path / "cmvn.json"
    rc = main(
        ["features", "cmvn", "--cuts", str(out_cuts), "--out", str(cmvn_path), "--no-progress"]
    )
    assert rc == 0
    stats = json.loads(cmvn_path.read_text())
    allf = np.concatenate(frames).astype(np.float64)
    assert stats["num_frames"] == allf.shape[0] and stats["dim"] == 80
    np.testing.assert_allclose(stats["mean"], allf.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["var"], allf.var(0), rtol=1e-4, atol=1e-5)

    # cmvn straight from audio (no stored features) is close to the stored-feature one
    raw_path = tmp_path / "cmvn_raw.json"
    assert (
        main(
            ["features", "cmvn", "--cuts", str(cuts_path), "--out", str(raw_path), "--no-progress"]
        )
        == 0
    )
    raw = json.loads(raw_path.read_text())
    assert raw["num_frames"] == stats["num_frames"]
    np.testing.assert_allclose(raw["mean"], stats["mean"], atol=0.02)


def test_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl.gz"
    rc = main(
        [
            "features",
            "compute",
            "--cuts",
            str(missing),
            "--out-cuts",
            str(tmp_path / "o.jsonl.gz"),
            "--storage",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 2 and "nope.jsonl.gz" in capsys.readouterr().err
    rc = main(["features", "cmvn", "--cuts", str(missing), "--out", str(tmp_path / "c.json")])
    assert rc == 2 and "nope.jsonl.gz" in capsys.readouterr().err

    cuts_path = _write_cuts(tmp_path)
    (tmp_path / "wav" / "u1.wav").write_bytes(b"garbage")
    rc = main(
        [
            "features",
            "cmvn",
            "--cuts",
            str(cuts_path),
            "--out",
            str(tmp_path / "c.json"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "u1" in err

    odd = tmp_path / "odd"
    odd.mkdir()
    sf.write(str(odd / "x.wav"), np.zeros(2205), 22050)
    from lhotse import CutSet, Recording, RecordingSet

    odd_cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings([Recording.from_file(odd / "x.wav")])
    )
    odd_cuts.to_file(odd / "cuts.jsonl.gz")
    rc = main(
        [
            "features",
            "compute",
            "--cuts",
            str(odd / "cuts.jsonl.gz"),
            "--out-cuts",
            str(odd / "o.jsonl.gz"),
            "--storage",
            str(odd / "s"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "22050 Hz" in err and next(iter(odd_cuts)).id in err
