"""``speechfm transcribe``: TSV and JSON lines, beam search, bad files, the console script.

Uses the memorising tiny CTC model that tests/unit/test_api.py trains (loaded from that
file by path, so the two stay one recipe).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from speechfm.cli import main


def _api_helpers():
    path = Path(__file__).resolve().parents[1] / "test_api.py"
    spec = importlib.util.spec_from_file_location("_speechfm_api_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _api_helpers()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return H.build_model_dir(tmp_path_factory.mktemp("cli_model"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    """TEXTS[0] as 8 kHz wav, TEXTS[1] as 44.1 kHz flac, TEXTS[2] as 16 kHz mp3."""
    root = tmp_path_factory.mktemp("cli_audio")
    out = []
    for text, (sr, fmt) in zip(
        H.TEXTS, ((8000, "wav"), (44100, "flac"), (16000, "mp3")), strict=True
    ):
        path = root / f"{text.replace(' ', '_')}.{fmt}"
        sf.write(path, H.synth(text, sr), sr)
        out.append(path)
    return out


def test_prints_file_tab_text_in_input_order(model_dir, files, capsys):
    order = [files[2], files[0], files[1]]
    rc = main(["transcribe", str(model_dir), *map(str, order), "--batch-size", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{files[2]}\t{H.TEXTS[2]}",
        f"{files[0]}\t{H.TEXTS[0]}",
        f"{files[1]}\t{H.TEXTS[1]}",
    ]


def test_beam_search(model_dir, files, capsys):
    rc = main(["transcribe", str(model_dir), str(files[0]), "--method", "beam", "--beam", "3"])
    assert rc == 0
    assert capsys.readouterr().out == f"{files[0]}\t{H.TEXTS[0]}\n"


@pytest.mark.parametrize("flag", ["--json", "--timestamps"])
def test_json_lines_with_word_times(model_dir, files, capsys, flag):
    rc = main(["transcribe", str(model_dir), str(files[0]), str(files[1]), flag])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(files[0]), str(files[1])]
    assert [r["text"] for r in rows] == [H.TEXTS[0], H.TEXTS[1]]
    for row, path in zip(rows, files[:2], strict=True):
        duration = sf.info(path).duration
        assert [w["word"] for w in row["words"]] == row["text"].split()
        prev = 0.0
        for w in row["words"]:
            assert prev <= w["start"] < w["end"] <= duration + 1e-6
            assert 0.0 <= w["confidence"] <= 1.0
            prev = w["end"]
        assert len(row["token_confidences"]) == len(row["tokens"]) == len(row["text"])


def test_bad_file_is_reported_and_the_rest_transcribed(model_dir, files, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not really a wave file")
    missing = tmp_path / "absent.flac"
    rc = main(["transcribe", str(model_dir), str(bad), str(files[1]), str(missing)])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == f"{files[1]}\t{H.TEXTS[1]}\n"
    assert "broken.wav: cannot decode audio" in captured.err
    assert "absent.flac: audio file does not exist" in captured.err


def test_incomplete_model_directory_is_a_clean_error(model_dir, files, tmp_path, capsys):
    rc = main(["transcribe", str(tmp_path), str(files[0])])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("speechfm transcribe: error:") and "config.json is missing" in err


def test_bad_option_values_are_usage_errors(model_dir, files, capsys):
    with pytest.raises(SystemExit) as info:
        main(["transcribe", str(model_dir), str(files[0]), "--beam", "0"])
    assert info.value.code == 2
    assert "--beam: must be >= 1" in capsys.readouterr().err


def test_console_script(model_dir, files):
    script = Path(sys.executable).with_name("speechfm")
    assert script.is_file(), f"the speechfm console script is not installed beside {sys.executable}"
    proc = subprocess.run(
        [str(script), "transcribe", str(model_dir), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{p}\t{t}" for p, t in zip(files, H.TEXTS, strict=True)]


def test_long_file_noise_file_and_directory(model_dir, files, tmp_path, capsys):
    """A 40 s recording goes piece by piece with a progress bar (its words timed in the
    file); a noise-only file prints an empty text (``--no-vad``: decoded anyway); a
    directory is named as one. Output stays in input order."""
    import numpy as np

    rng = np.random.default_rng(0)
    parts, texts = [], []
    while sum(p.shape[0] for p in parts) < 40 * H.SR:
        k = len(texts) % 3
        parts += [H.synth(H.TEXTS[k], seed=k + 1),
                  (3e-3 * rng.standard_normal(int(1.5 * H.SR))).astype(np.float32)]
        texts.append(H.TEXTS[k])
    long_file = tmp_path / "long.flac"
    sf.write(long_file, np.concatenate(parts), H.SR)
    noise_file = tmp_path / "noise.wav"
    sf.write(noise_file, (0.01 * rng.standard_normal(3 * H.SR)).astype(np.float32), H.SR)
    argv = ["transcribe", str(model_dir), str(files[0]), str(long_file), str(noise_file),
            str(tmp_path), str(files[1])]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.splitlines() == [
        f"{files[0]}\t{H.TEXTS[0]}", f"{long_file}\t{' '.join(texts)}", f"{noise_file}\t",
        f"{files[1]}\t{H.TEXTS[1]}"]
    assert "long audio" in captured.err and "s [" in captured.err
    assert f"{tmp_path}: is a directory, not an audio file" in captured.err

    assert main(["transcribe", str(model_dir), str(noise_file), "--no-vad", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["file"] == str(noise_file) and isinstance(row["text"], str)
    assert main(["transcribe", str(model_dir), str(long_file), "--timestamps", "--no-progress",
                 "--long-form-s", "10"]) == 0
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["text"] == " ".join(texts) and "long audio" not in captured.err
    ends = [w["end"] for w in row["words"]]
    assert ends == sorted(ends) and ends[-1] <= sf.info(long_file).duration
