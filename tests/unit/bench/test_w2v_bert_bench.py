"""bench/w2v_bert.py runs on a tiny size and reports both timings and their ratio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "w2v_bert.py"


def test_tiny_benchmark_reports_the_ratio(tmp_path):
    spec = importlib.util.spec_from_file_location("speechfm_bench_w2v_bert", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "RESULTS.md"
    assert bench.main(["--size", "w2v_bert_tiny", "--batch", "2", "--seconds", "1",
                       "--threads", "1", "--repeat", "2", "--write", str(out)]) == 0
    text = out.read_text()
    assert "w2v_bert_tiny" in text and "step / encoder" in text
    r = bench.run("w2v_bert_tiny", 2, 1.0, 1, 2)
    assert r["encoder_s"] > 0 and r["step_s"] > 0
    assert r["ratio"] == r["step_s"] / r["encoder_s"]
    assert abs(r["outside_share"] - (1 - r["encoder_s"] / r["step_s"])) < 1e-12
