"""speechfm.data.check and ``speechfm data ...``: every planted bad item is named with its reason."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechfm.data.check import ItemProblem, check_cuts
from speechfm.data.manifest import load_manifest, read_manifest
from speechfm.errors import DataError

# utterance id -> the reasons `data check` must give for it (with min 0.1 s, max 2 s and a
# tokenizer that knows a-z)
EXPECTED = {
    "missing": {"missing_file"},
    "garbage": {"unreadable"},
    "empty": {"empty_audio"},
    "nan": {"non_finite"},
    "inf": {"non_finite"},
    "long": {"too_long"},
    "short": {"too_short"},
    "notext": {"empty_text"},
    "oov": {"unknown_chars"},
    "dup": {"duplicate_id"},
    "orphan": {"bad_entry"},
}
GOOD = ["good1", "good2", "good3"]


def _plant(tmp_path: Path, h) -> Path:
    """A Kaldi dir with three good utterances and one of each kind of bad one."""
    wav = tmp_path / "wav"
    paths = {
        u: h.write_audio(wav / f"{u}.wav", sr, 0.5)
        for u, sr in zip(GOOD, (8000, 16000, 22050), strict=True)
    }
    paths["missing"] = wav / "missing.wav"
    paths["garbage"] = wav / "garbage.wav"
    paths["garbage"].write_bytes(os.urandom(2000))
    paths["empty"] = h.write_audio(wav / "empty.wav", samples=np.zeros(0))
    for name, value in (("nan", np.nan), ("inf", -np.inf)):
        x = h.tone(16000, 0.5).astype(np.float32)
        x[1234] = value
        paths[name] = h.write_audio(wav / f"{name}.wav", samples=x, subtype="FLOAT")
    paths["long"] = h.write_audio(wav / "long.wav", 8000, 2.5)
    paths["short"] = h.write_audio(wav / "short.wav", 16000, 0.05)
    for name in ("notext", "oov", "dup"):
        paths[name] = h.write_audio(wav / f"{name}.wav", 16000, 0.3)
    d = tmp_path / "train"
    d.mkdir()
    lines = [f"{u} {p}" for u, p in paths.items()] + [f"dup {paths['dup']}"]
    (d / "wav.scp").write_text("\n".join(sorted(lines)) + "\n")
    text = {u: "zero one" for u in paths} | {"notext": "", "oov": "zero два", "orphan": "lost"}
    (d / "text").write_text(
        "".join(f"{u} {t}\n" for u, t in sorted(text.items())), encoding="utf-8"
    )
    (d / "utt2spk").write_text("".join(f"{u} s1\n" for u in sorted(paths)))
    return d


def _reasons(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in report.problems:
        out.setdefault(p.id, set()).add(p.reason)
    return out


def test_check_cuts_names_every_bad_item(tmp_path, h):
    d = _plant(tmp_path, h)
    cuts, import_problems = read_manifest(d)
    report = check_cuts(
        cuts,
        min_duration=0.1,
        max_duration=2.0,
        tokenizer=h.FakeTokenizer("abcdefghijklmnopqrstuvwxyz"),
        known_problems=import_problems,
        num_workers=2,
    )
    assert _reasons(report) == EXPECTED
    assert report.num_total == len(cuts) + 1  # + the transcript without audio
    assert (report.num_good, report.num_bad) == (3, len(EXPECTED) + 1)  # "dup" is two items
    assert report.counts_by_reason()["non_finite"] == 2
    assert report.counts_by_reason()["duplicate_id"] == 2
    details = {p.id: p.detail for p in report.problems}
    assert "missing.wav" in details["missing"] and "garbage.wav" in details["garbage"]
    assert "1 NaN" in details["nan"] and "1 Inf" in details["inf"]
    assert "'д'" in details["oov"] and "'в'" in details["oov"] and "'a'" not in details["oov"]
    assert "2.5" in details["long"] and "0.050" in details["short"]

    good = report.select_good(cuts)
    assert sorted(c.id for c in good) == GOOD
    assert check_cuts(good, min_duration=0.1, max_duration=2.0).ok
    tsv = tmp_path / "report.tsv"
    report.write_tsv(tsv)
    rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["id", "reason", "detail"]
    assert {(r[0], r[1]) for r in rows[1:]} == {(u, r) for u, rs in EXPECTED.items() for r in rs}


def test_check_options(tmp_path, h):
    from lhotse import Recording

    from speechfm.data.manifest import make_cut

    rec = Recording.from_file(h.write_audio(tmp_path / "a.wav"), "a")
    cuts = [
        make_cut("a", rec, text="hi", ipa="h aɪ"),
        make_cut("b", rec, text="hi", ipa=""),
        make_cut("c", rec, text="", ipa="h x"),
        rec.to_cut(),  # no supervision at all
    ]
    report = check_cuts(cuts, text_field="ipa", tokenizer=h.FakeTokenizer("haɪ"))
    # the first "a" is fine but shares its id; the second has no supervision at all
    assert _reasons(report) == {
        "b": {"empty_text"},
        "c": {"unknown_chars"},
        "a": {"duplicate_id", "empty_text"},
    }
    assert check_cuts(cuts[3:], require_text=False).ok
    assert _reasons(check_cuts(cuts[3:])) == {"a": {"empty_text"}}
    known = [
        ItemProblem("b", "bad_entry", "seen earlier"),
        ItemProblem("zzz", "bad_entry", "no audio"),
    ]
    report = check_cuts(cuts[1:2], known_problems=known)
    assert _reasons(report) == {"b": {"bad_entry"}, "zzz": {"bad_entry"}}
    assert (report.num_total, report.num_bad) == (2, 2)
    with pytest.raises(DataError, match="unknown_symbols"):
        check_cuts(cuts, tokenizer=object())
    with pytest.raises(DataError, match="duration range"):
        check_cuts(cuts, min_duration=2.0, max_duration=1.0)


def _tokenizer_dir(tmp_path: Path) -> Path:
    from speechfm.text.char import CharTokenizer

    return CharTokenizer(list("abcdefghijklmnopqrstuvwxyz")).save(tmp_path / "tok")


def test_cli_check_kaldi_dir_and_its_clean_copy(tmp_path, h, run_cli):
    d = _plant(tmp_path, h)
    clean = tmp_path / "clean"
    args = ["--min-duration", "0.1", "--max-duration", "2", "--tokenizer", _tokenizer_dir(tmp_path)]
    rc, out, _ = run_cli("data", "check", d, "--out", clean, *args)
    assert rc == 1
    bad_lines = [line.split("\t") for line in out.splitlines() if line.startswith("BAD\t")]
    assert {(f[1], f[2]) for f in bad_lines} == {(u, r) for u, rs in EXPECTED.items() for r in rs}
    assert "good 3" in out and f"bad {len(EXPECTED) + 1}" in out and "non_finite: 2" in out
    report = (clean / "bad_items.tsv").read_text(encoding="utf-8")
    for utt in EXPECTED:
        assert f"\n{utt}\t" in report
    # the cleaned copy is a Kaldi dir holding exactly the good utterances, and passes
    assert sorted(line.split()[0] for line in (clean / "wav.scp").read_text().splitlines()) == GOOD
    assert (clean / "spk2utt").read_text() == "s1 good1 good2 good3\n"
    rc, out, _ = run_cli("data", "check", clean, *args)
    assert rc == 0 and "bad 0" in out and "BAD" not in out


def test_cli_check_tsv_writes_a_manifest(tmp_path, h, run_cli):
    h.write_audio(tmp_path / "a.wav")
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "id\tpath\ttext\tlang\tspeaker\nu1\ta.wav\tone\ten\ts\nu2\tb.wav\ttwo\ten\ts\nu3\ta.wav\t\ten\ts\n"
    )
    rc, out, _ = run_cli("data", "check", tsv, "--out", tmp_path / "clean")
    assert rc == 1
    assert "BAD\tu2\tmissing_file" in out and "BAD\tu3\tempty_text" in out and "BAD\tu1" not in out
    cleaned = tmp_path / "clean" / "cuts_dev.jsonl.gz"
    assert [c.id for c in load_manifest(cleaned)] == ["u1"]
    rc, out, _ = run_cli("data", "check", cleaned)
    assert rc == 0
    # a bad argument is an error (status 2), not a failed check
    assert run_cli("data", "check", tmp_path / "missing-dir")[0] == 2
    assert run_cli("data", "check", cleaned, "--out", tmp_path / "clean")[0] == 2  # would overwrite


def test_cli_import_and_export_kaldi(tmp_path, h, run_cli):
    h.write_audio(tmp_path / "a.wav", 8000)
    h.write_audio(tmp_path / "b.flac", 16000)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"path": "a.wav", "text": "one", "lang": "en", "speaker": "s1", "ipa": "w ʌ n"}\n'
        '{"path": "b.flac", "text": "two", "lang": "ky", "speaker": "s2"}\n',
        encoding="utf-8",
    )
    cuts_path = tmp_path / "cuts_x.jsonl.gz"
    assert run_cli("data", "import", rows, "--out", cuts_path)[0] == 0
    with gzip.open(cuts_path, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert first["id"] == "a" and first["supervisions"][0]["custom"] == {"ipa": "w ʌ n"}
    assert run_cli("data", "export-kaldi", cuts_path, "--out", tmp_path / "k")[0] == 0
    k = tmp_path / "k"
    assert (k / "utt2lang").read_text() == "a en\nb ky\n"
    assert (k / "text_ipa").read_text(encoding="utf-8") == "a w ʌ n\n"
    back = load_manifest(k)
    assert [(c.id, c.supervisions[0].text, c.supervisions[0].language) for c in back] == [
        ("a", "one", "en"),
        ("b", "two", "ky"),
    ]
    # import refuses a set with a bad item and names it
    rows.write_text('{"path": "gone.wav", "id": "lost", "text": "x"}\n')
    rc, _, err = run_cli("data", "import", rows, "--out", tmp_path / "c2.jsonl.gz")
    assert rc == 2 and "lost" in err and "missing_file" in err


def test_console_script(tmp_path, h):
    d = _plant(tmp_path, h)
    script = Path(sys.executable).with_name("speechfm")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "speechfm"]
    proc = subprocess.run(
        [
            *cmd,
            "data",
            "check",
            str(d),
            "--min-duration",
            "0.1",
            "--max-duration",
            "2",
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    for utt in set(EXPECTED) - {"oov"}:  # no tokenizer given here
        assert f"BAD\t{utt}\t" in proc.stdout
    assert "BAD\toov\t" not in proc.stdout
    proc = subprocess.run(
        [*cmd, "data", "check", str(tmp_path / "c")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sample_rate_mismatch_between_manifest_and_file(tmp_path, h, run_cli):
    """A file replaced by a resampled copy after the manifest was written: lhotse would
    quietly decode it at the manifest's rate; `data check` names both rates."""
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut

    paths = {u: h.write_audio(tmp_path / "wav" / f"{u}.wav", 16000, 0.5)
             for u in ("same", "changed", "resampled")}
    recs = {u: Recording.from_file(p, u) for u, p in paths.items()}
    h.write_audio(paths["changed"], 8000, 0.5)  # the file changes, the manifest does not
    # a declared resampling (lhotse's cut.resample) is no mismatch: the source rate counts
    cuts = [make_cut(u, recs[u], text="zero one") for u in ("same", "changed")]
    cuts.append(make_cut("resampled", recs["resampled"], text="zero one").resample(8000))
    report = check_cuts(cuts)
    assert _reasons(report) == {"changed": {"sample_rate_mismatch"}}
    (detail,) = [p.detail for p in report.problems]
    assert "changed.wav" in detail and "declares 16000 Hz" in detail and "is 8000 Hz" in detail
    assert [c.id for c in report.select_good(cuts)] == ["same", "resampled"]

    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    rc, out, _ = run_cli("data", "check", manifest)
    assert rc == 1
    assert "BAD\tchanged\tsample_rate_mismatch\t" in out and "sample_rate_mismatch: 1" in out
