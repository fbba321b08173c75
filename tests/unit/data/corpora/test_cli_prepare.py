"""`speechfm prepare ...` entry points."""

from __future__ import annotations

import argparse
import json

from speechfm.cli import prepare


def _run(argv):
    parser = argparse.ArgumentParser(prog="speechfm")
    prepare.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prepare_mini_cv_lang_cli(shared_data, tmp_path, capsys):
    out = tmp_path / "c"
    rc = _run(["prepare", "mini_cv_lang", "--out", str(out), "--text-dir", str(shared_data / "udhr2"),
               "--langs", "es,id", "--utts-per-lang", "10", "--seed", "1", "--nj", "1", "--snr-db", "none"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["splits"]["train"]["utterances"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["noise_snr_db"] is None
    assert set(summary["splits"]["test"]["languages"]) == {"es", "id"}


def test_prepare_fsdd_and_speech_commands_cli(shared_data, tmp_path, capsys):
    rc = _run(["prepare", "speech_commands", "--out", str(tmp_path / "sc"), "--no-ipa",
               "--root", str(shared_data / "speech_commands_mini/speech_commands_v0.01")])
    assert rc == 0 and (tmp_path / "sc" / "cuts_test.jsonl.gz").is_file()
    rc = _run(["prepare", "fsdd", "--out", str(tmp_path / "fsdd"), "--root", str(shared_data / "fsdd"),
               "--test-speakers", "jackson", "--dev-speakers", "theo", "--no-ipa"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["splits"]["test"] == {"utterances": 500, "hours": report["splits"]["test"]["hours"], "speakers": 1}
    assert (tmp_path / "fsdd" / "wav").is_dir()  # resampled to 16 kHz by default
