"""bench/inference.py runs end to end (a tiny model, two synthetic utterances) and prints
one row per path with the PyTorch-relative speed-up and text agreement."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
pytest.importorskip("sherpa_onnx", reason="the export extra (sherpa-onnx) is not installed")

BENCH = Path(__file__).resolve().parents[3] / "bench" / "inference.py"


def test_inference_bench_prints_ratios(trained_transducer_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("speechfm_bench_inference", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import torch

    threads = torch.get_num_threads()
    try:
        assert bench.main([str(trained_transducer_dir), "--cuts", "", "--num-utts", "2",
                           "--repeat", "1", "--chunk-size", "4", "--left-context", "32",
                           "--export-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "online_transducer" in out
    rows = [line.split() for line in out.splitlines()
            if line.startswith(("pytorch", "sherpa-onnx"))]
    assert [r[0] if r[0] == "pytorch" else " ".join(r[:2]) for r in rows] == [
        "pytorch", "sherpa-onnx fp32", "sherpa-onnx int8"]
    # ... RTF, speed-up over PyTorch, texts identical to PyTorch's (no transcripts: no CER)
    assert rows[0][-2] == "1.00x" and all(float(r[-2].rstrip("x")) > 0 for r in rows)
    assert rows[1][-1] == "2/2"  # fp32 gives PyTorch's text on both
