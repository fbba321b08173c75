"""speechfm.data.tabular and load_manifest: TSV/JSONL import and format auto-detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechfm.data.audio import load_cut_audio
from speechfm.data.manifest import detect_format, load_manifest, read_manifest
from speechfm.data.tabular import load_jsonl, load_tsv, read_tsv
from speechfm.errors import DataError


def _fields(cut) -> tuple:
    s = cut.supervisions[0]
    return cut.id, s.text, s.language, s.speaker, (s.custom or {}).get("ipa")


def test_tsv_import(tmp_path, h):
    h.write_audio(tmp_path / "wav" / "a.wav", 8000, 0.5)
    h.write_audio(tmp_path / "wav" / "b.flac", 22050, 0.25)
    tsv = tmp_path / "train.tsv"
    tsv.write_text(
        "id\tpath\ttext\tlang\tspeaker\tipa\n"
        'utt1\twav/a.wav\thello, "world"\ten\tspk1\th ə l ˈoʊ\n'
        f"utt2\t{tmp_path / 'wav' / 'b.flac'}\tbuenos días\tes\tspk2\t\n",
        encoding="utf-8",
    )
    cuts = load_tsv(tsv)
    assert [_fields(c) for c in cuts] == [
        ("utt1", 'hello, "world"', "en", "spk1", "h ə l ˈoʊ"),
        ("utt2", "buenos días", "es", "spk2", None),
    ]
    a, b = list(cuts)
    assert Path(a.recording.sources[0].source) == tmp_path / "wav" / "a.wav"  # relative to the TSV
    assert (a.recording.sampling_rate, b.recording.sampling_rate) == (8000, 22050)
    assert load_cut_audio(a).shape == (8000,) and load_cut_audio(b).shape == (4000,)


def test_tsv_ids_made_from_paths_stay_distinct(tmp_path, h):
    for word in ("yes", "no"):
        h.write_audio(tmp_path / "sc" / word / "0a7c_nohash_0.wav")
    tsv = tmp_path / "x.tsv"
    tsv.write_text(
        "path\ttext\tlang\tspeaker\nsc/yes/0a7c_nohash_0.wav\tyes\ten\ts\nsc/no/0a7c_nohash_0.wav\tno\ten\ts\n"
    )
    assert [c.id for c in load_tsv(tsv)] == ["yes-0a7c_nohash_0", "no-0a7c_nohash_0"]


def test_jsonl_import(tmp_path, h):
    h.write_audio(tmp_path / "a.mp3", 44100, 0.5, channels=2)
    rows = [
        {"path": "a.mp3", "text": "one", "lang": "tt", "speaker": "v1", "ipa": "w ʌ n"},
        {"id": "x2", "path": "a.mp3", "text": "two", "language": "tr", "speaker": 7},
    ]
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cuts = load_jsonl(p)
    assert [_fields(c) for c in cuts] == [
        ("a", "one", "tt", "v1", "w ʌ n"),
        ("x2", "two", "tr", "7", None),
    ]
    assert load_cut_audio(next(iter(cuts))).shape == (8000,)


def test_tsv_schema_errors_and_row_problems(tmp_path, h):
    bad_col = tmp_path / "a.tsv"
    bad_col.write_text("paht\ttext\nx.wav\thi\n")
    with pytest.raises(DataError, match="no 'path' column"):
        read_tsv(bad_col)
    typo = tmp_path / "b.tsv"
    typo.write_text("path\ttext\tlnag\nx.wav\thi\ten\n")
    with pytest.raises(DataError, match="unknown column.*lnag"):
        read_tsv(typo)

    h.write_audio(tmp_path / "ok.wav")
    rows = tmp_path / "c.tsv"
    rows.write_text("id\tpath\ttext\nu1\tok.wav\thi\nu2\tok.wav\nu3\t\tno path\nu4\tgone.wav\tx\n")
    cuts, problems = read_tsv(rows)
    assert [c.id for c in cuts] == ["u1", "u4"]  # u4 is kept so the check can report it
    got = {(p.id, p.reason) for p in problems}
    assert got == {("c.tsv:3", "bad_entry"), ("u3", "bad_entry"), ("u4", "missing_file")}
    with pytest.raises(DataError, match="u4"):
        load_tsv(rows)


def test_load_manifest_detects_every_format(tmp_path, h):
    from lhotse import RecordingSet

    h.write_audio(tmp_path / "a.wav", 8000)
    h.write_audio(tmp_path / "b.wav", 16000)
    tsv = tmp_path / "set.tsv"
    tsv.write_text("path\ttext\tlang\tspeaker\na.wav\tone\ten\ts1\nb.wav\ttwo\ten\ts2\n")
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"path": "a.wav", "text": "one"}\n{"path": "b.wav", "text": "two"}\n')
    cuts = load_manifest(tsv)
    cuts.to_file(tmp_path / "cuts_set.jsonl.gz")
    cuts.to_file(tmp_path / "cuts_set.json")
    from speechfm.data.kaldi import export_kaldi_dir

    export_kaldi_dir(cuts, tmp_path / "kaldi")
    RecordingSet.from_recordings(c.recording for c in cuts).to_file(tmp_path / "recs.jsonl.gz")

    expected = {
        tsv: "tsv",
        jsonl: "jsonl",
        tmp_path / "cuts_set.jsonl.gz": "lhotse",
        tmp_path / "cuts_set.json": "lhotse",
        tmp_path / "kaldi": "kaldi",
        tmp_path / "recs.jsonl.gz": "lhotse",
    }
    for src, fmt in expected.items():
        assert detect_format(src) == fmt, src
        loaded = load_manifest(src)
        assert [c.id for c in loaded] == ["a", "b"], src
        assert [load_cut_audio(c).shape for c in loaded] == [(8000,), (8000,)], src
    assert read_manifest(tmp_path / "cuts_set.jsonl.gz")[1] == []


def test_load_manifest_refuses_unknown_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_manifest(tmp_path / "nothing")
    with pytest.raises(DataError, match="no wav.scp"):
        load_manifest(tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataError, match="cannot tell its format"):
        load_manifest(tmp_path / "notes.txt")
    (tmp_path / "other.jsonl").write_text('{"audio": "x.wav"}\n')
    with pytest.raises(DataError, match="neither lhotse"):
        load_manifest(tmp_path / "other.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no manifest records"):
        load_manifest(tmp_path / "empty.jsonl")
