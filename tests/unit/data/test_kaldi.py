"""speechfm.data.kaldi: Kaldi data dir import/export, round trips and reported problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechfm.data.audio import load_cut_audio, read_audio
from speechfm.data.kaldi import export_kaldi_dir, load_kaldi_dir, read_kaldi_dir
from speechfm.data.manifest import make_cut
from speechfm.errors import DataError


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _segmented_cuts(tmp_path, h):
    """Two recordings (16 kHz wav, 8 kHz flac), each split into two utterances."""
    from lhotse import CutSet, Recording

    r1 = Recording.from_file(h.write_audio(tmp_path / "audio" / "rec1.wav", 16000, 2.0), "rec1")
    r2 = Recording.from_file(h.write_audio(tmp_path / "audio" / "rec2.flac", 8000, 1.5), "rec2")
    spec = [
        ("spk1-a", r1, 0.0, 0.8, "hello world", "en", "spk1", "h ə l ˈoʊ | w ˈɜː l d"),
        ("spk1-b", r1, 1.0, 0.75, "bonjour", "fr", "spk1", "b ɔ̃ ʒ ˈu ʁ"),
        ("spk2-a", r2, 0.25, 1.0, "hola  amigo", "es", "spk2", None),
        ("spk2-b", r2, 1.25, 0.25, "", "es", "spk2", "o"),
    ]
    cuts = [
        make_cut(u, r, start=s, duration=d, text=t, language=lang, speaker=spk, ipa=ipa, gender="f")
        for u, r, s, d, t, lang, spk, ipa in spec
    ]
    return CutSet.from_cuts(cuts)


def test_round_trip_with_segments(tmp_path, h):
    cuts = _segmented_cuts(tmp_path, h)
    d = export_kaldi_dir(cuts, tmp_path / "kaldi")
    names = {p.name for p in d.iterdir()}
    assert {
        "wav.scp",
        "segments",
        "text",
        "utt2spk",
        "spk2utt",
        "utt2lang",
        "utt2dur",
        "text_ipa",
    } <= names
    assert _lines(d / "wav.scp") == [
        f"rec1 {tmp_path / 'audio' / 'rec1.wav'}",
        f"rec2 {tmp_path / 'audio' / 'rec2.flac'}",
    ]
    assert _lines(d / "segments") == [
        "spk1-a rec1 0 0.8",
        "spk1-b rec1 1 1.75",
        "spk2-a rec2 0.25 1.25",
        "spk2-b rec2 1.25 1.5",
    ]
    assert _lines(d / "spk2utt") == ["spk1 spk1-a spk1-b", "spk2 spk2-a spk2-b"]
    assert _lines(d / "text")[2:] == ["spk2-a hola amigo", "spk2-b"]  # one line, empty kept
    assert _lines(d / "text_ipa") == [
        "spk1-a h ə l ˈoʊ | w ˈɜː l d",
        "spk1-b b ɔ̃ ʒ ˈu ʁ",
        "spk2-b o",
    ]
    assert _lines(d / "utt2lang") == ["spk1-a en", "spk1-b fr", "spk2-a es", "spk2-b es"]
    assert _lines(d / "spk2gender") == ["spk1 f", "spk2 f"]

    back = load_kaldi_dir(d)
    assert [c.id for c in back] == [c.id for c in cuts]
    # a file-length limit does not apply to recordings that segments split up
    assert read_kaldi_dir(d, max_duration=1.0)[1] == []
    for old, new in zip(cuts, back, strict=True):
        so, sn = old.supervisions[0], new.supervisions[0]
        assert new.start == pytest.approx(old.start) and new.duration == pytest.approx(old.duration)
        assert new.recording.id == old.recording.id
        assert new.recording.sampling_rate == old.recording.sampling_rate  # 8 kHz stays 8 kHz
        assert new.recording.sources[0].source == old.recording.sources[0].source
        assert (sn.text or "") == " ".join((so.text or "").split())
        assert (sn.language, sn.speaker, sn.gender) == (so.language, so.speaker, so.gender)
        assert (sn.custom or {}).get("ipa") == (so.custom or {}).get("ipa")
        np.testing.assert_allclose(load_cut_audio(new), load_cut_audio(old), atol=1e-6)
    # exporting the import again gives the same directory
    again = export_kaldi_dir(back, tmp_path / "kaldi2")
    for name in names:
        assert _lines(again / name) == _lines(d / name), name


def test_round_trip_whole_files_has_no_segments(tmp_path, h):
    from lhotse import CutSet, Recording

    cuts = CutSet.from_cuts(
        make_cut(
            f"u{i}",
            Recording.from_file(h.write_audio(tmp_path / f"f{i}.wav", sr, 0.5), f"u{i}"),
            text=f"word {i}",
            language="en",
            speaker=f"s{i % 2}",
        )
        for i, sr in enumerate((8000, 16000, 22050))
    )
    d = export_kaldi_dir(cuts, tmp_path / "k")
    assert not (d / "segments").exists() and not (d / "text_ipa").exists()
    assert _lines(d / "wav.scp")[0] == f"u0 {tmp_path / 'f0.wav'}"
    assert _lines(d / "utt2dur") == ["u0 0.5", "u1 0.5", "u2 0.5"]
    assert _lines(d / "spk2utt") == ["s0 u0 u2", "s1 u1"]
    back = load_kaldi_dir(d)
    assert [(c.id, c.supervisions[0].text, c.supervisions[0].speaker) for c in back] == [
        ("u0", "word 0", "s0"),
        ("u1", "word 1", "s1"),
        ("u2", "word 2", "s0"),
    ]
    assert [c.recording.sampling_rate for c in back] == [8000, 16000, 22050]
    for c in back:
        assert load_cut_audio(c).shape == (8000,)


def test_import_hand_written_dir_with_relative_paths(tmp_path, h, monkeypatch):
    h.write_audio(tmp_path / "data" / "wav" / "a.wav", 8000, 0.5)
    h.write_audio(tmp_path / "data" / "wav" / "b.wav", 16000, 0.25, channels=2)
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("a wav/a.wav\nb wav/b.wav\n")  # relative to the dir's parent
    (d / "text").write_text("a zero\nb one two\n")
    (d / "text_ipa").write_text("a z ˈiː ɹ oʊ\n")
    (d / "utt2spk").write_text("a alice\nb bob\n")
    (d / "utt2lang").write_text("a en\nb ky\n")
    monkeypatch.chdir(tmp_path)
    cuts = load_kaldi_dir(d)
    a, b = list(cuts)
    assert Path(a.recording.sources[0].source) == tmp_path / "data" / "wav" / "a.wav"
    assert a.supervisions[0].custom == {"ipa": "z ˈiː ɹ oʊ"} and b.supervisions[0].custom is None
    assert (b.supervisions[0].text, b.supervisions[0].language, b.supervisions[0].speaker) == (
        "one two",
        "ky",
        "bob",
    )
    assert b.recording.num_channels == 2
    assert load_cut_audio(a).shape == (8000,) and load_cut_audio(b).shape == (4000,)
    np.testing.assert_allclose(
        load_cut_audio(b), read_audio(tmp_path / "data" / "wav" / "b.wav"), atol=1e-6
    )


def test_problems_are_reported_by_utterance(tmp_path, h):
    good = h.write_audio(tmp_path / "good.wav", 16000, 1.0)
    d = tmp_path / "k"
    d.mkdir()
    (d / "wav.scp").write_text(f"r1 {good}\nr2 {tmp_path / 'missing.wav'}\n")
    (d / "segments").write_text(
        "u1 r1 0 0.5\n"
        "u2 r1 0.5 1.5\n"  # ends after the 1 s recording
        "u3 r1 zero 1\n"  # malformed
        "u4 r2 0 1\n"  # missing audio
        "u5 r9 0 1\n"  # unknown recording
        "u6 r1 0.2 0.6\n"
    )
    (d / "text").write_text("u1 a\nu1 b\nu2 c\nu4 d\nu6 e\nghost f\n")
    (d / "utt2dur").write_text("u1 0.5\nu6 0.9\n")
    cuts, problems = read_kaldi_dir(d)
    assert [c.id for c in cuts] == ["u1", "u2", "u4", "u6"]  # nothing that has audio is dropped
    got = {(p.id, p.reason) for p in problems}
    assert got == {
        ("u1", "duplicate_id"),
        ("u2", "bad_entry"),
        ("u3", "bad_entry"),
        ("u4", "missing_file"),
        ("u5", "bad_entry"),
        ("u6", "duration_mismatch"),
        ("ghost", "bad_entry"),
    }
    by_id = {p.id: p.detail for p in problems}
    assert "lines [1, 2]" in by_id["u1"] and "text" in by_id["u1"]
    assert "missing.wav" in by_id["u4"]
    assert "r9" in by_id["u5"] and "segments line 5" in by_id["u5"]
    assert "text" in by_id["ghost"]
    with pytest.raises(DataError) as e:
        load_kaldi_dir(d)
    for utt in ("u1", "u2", "u3", "u4", "u5", "u6", "ghost"):
        assert utt in str(e.value)


def test_duplicate_wav_scp_ids_stay_visible(tmp_path, h):
    p = h.write_audio(tmp_path / "a.wav")
    d = tmp_path / "k"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 {p}\nu1 {p}\nu2 {p}\n")
    cuts, problems = read_kaldi_dir(d)
    assert [c.id for c in cuts] == ["u1", "u1", "u2"] and problems == []
    with pytest.raises(DataError, match="u1"):
        load_kaldi_dir(d)


def test_not_a_kaldi_dir(tmp_path):
    with pytest.raises(DataError, match="no wav.scp"):
        read_kaldi_dir(tmp_path)


def test_export_prefix_speaker_and_refusals(tmp_path, h):
    from lhotse import CutSet, Recording, SupervisionSegment
    from lhotse.utils import fastcopy

    rec = Recording.from_file(h.write_audio(tmp_path / "a.wav"), "rec")
    cut = make_cut("utt", rec, text="x", speaker="spk")
    d = export_kaldi_dir(CutSet.from_cuts([cut]), tmp_path / "k", prefix_speaker=True)
    assert _lines(d / "utt2spk") == ["spk-utt spk"] and _lines(d / "wav.scp")[0].startswith(
        "spk-utt "
    )

    two = fastcopy(cut, supervisions=[*cut.supervisions, SupervisionSegment("s2", "rec", 0, 0.1)])
    with pytest.raises(DataError, match="utt.*2 supervisions"):
        export_kaldi_dir([two], tmp_path / "k2")
    with pytest.raises(DataError, match="whitespace"):
        export_kaldi_dir([fastcopy(cut, id="a b")], tmp_path / "k3")
    with pytest.raises(DataError, match="repeat"):
        export_kaldi_dir([cut, cut], tmp_path / "k4")
