"""Smoke tests of bench/conformer.py (speechfm Conformer vs transformers Wav2Vec2BertModel)."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bench(repo_root):
    path = repo_root / "bench" / "conformer.py"
    spec = importlib.util.spec_from_file_location("speechfm_bench_conformer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _tiny(bench, **overrides):
    fields = dict(
        dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_kernel=5,
        rel_left_max=6,
        rel_right_max=2,
        batch_size=3,
        seconds=0.6,
        warmup=0,
        iters=1,
        device="cpu",
    )
    fields.update(overrides)
    return bench.BenchConfig(**fields)


def test_tiny_benchmark_times_both_models_and_matches_outputs(bench):
    result = bench.run_benchmark(_tiny(bench))
    assert [(r.mode, r.dtype) for r in result.rows] == [
        ("forward", "fp32"),
        ("forward+backward", "fp32"),
    ]
    for row in result.rows:
        assert math.isfinite(row.ours_s) and row.ours_s > 0
        assert math.isfinite(row.hf_s) and row.hf_s > 0
        assert math.isfinite(row.ratio) and row.ratio > 0
        assert row.valid_frames < row.utterances * 30  # padding is masked, not counted
        assert row.target == 1.5  # the CPU target
    # Equal configuration: the same parameters, and the same function with HF's weights.
    assert result.ours_params == result.hf_params
    assert result.max_abs_diff < 1e-4
    report = bench.format_report(result, command="bench/conformer.py --tiny")
    assert "| forward | fp32 |" in report and "| forward+backward | fp32 |" in report
    assert ("PASS" in report) or ("MISS" in report)
    assert "bench/conformer.py --tiny`" in report  # prefixed by OMP_NUM_THREADS=1 when set


def test_weight_copy_rejects_a_different_configuration(bench):
    cfg = _tiny(bench)
    ours, hf = bench.build_models(cfg, torch.device("cpu"))
    from speechfm.models.conformer import create_conformer_encoder
    from speechfm.models.conformer.interop import hf_config_from_conformer, load_hf_weights

    # The bench's HF model is the interop module's conversion of its speechfm config.
    expect = hf_config_from_conformer(bench.speechfm_config(cfg))
    for name in ("hidden_size", "num_hidden_layers", "left_max_position_embeddings"):
        assert getattr(hf.config, name) == getattr(expect, name)
    wider = bench.speechfm_config(cfg)
    wider.ffn_dim = 96
    with pytest.raises(ValueError, match="shape"):
        load_hf_weights(create_conformer_encoder(wider), hf)


def test_analytic_flops_match_the_flop_counter(bench):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = _tiny(bench, min_fraction=1.0)
    ours, _ = bench.build_models(cfg, torch.device("cpu"))
    batch = bench.make_batch(cfg, torch.device("cpu"))
    ours.eval()
    # The math backend decomposes SDPA into matmuls the counter sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        ours(batch.fbank, batch.fbank_lens)
    n, t = cfg.batch_size, cfg.num_frames
    assert bench.encoder_flops(cfg, n, t, backward=False) == fc.get_total_flops()
    assert bench.encoder_flops(cfg, n, t, backward=True) == 3 * fc.get_total_flops()


def test_peak_lookup_prefers_the_specific_name(bench):
    assert bench.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_bf16_flops("NVIDIA L40S") == 362e12
    assert bench.peak_bf16_flops("Some Future GPU") is None


def test_append_to_section_keeps_other_sections(bench, tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# speechfm benchmarks\n\n## RNN-T loss\n\nrnnt table\n")
    bench.append_to_section(out, "### run 1\n\nfirst\n")
    bench.append_to_section(out, "### run 2\n\nsecond\n")
    text = out.read_text()
    assert text.count(bench.SECTION_TITLE) == 1
    assert text.index("## RNN-T loss") < text.index(bench.SECTION_TITLE)
    assert "rnnt table" in text
    assert text.index("first") < text.index("second")

    # With our section first, new runs land before the next section.
    other = tmp_path / "other.md"
    other.write_text(f"# b\n\n{bench.SECTION_TITLE}\n\nold\n\n## RNN-T loss\n\nrnnt\n")
    bench.append_to_section(other, "new run\n")
    text = other.read_text()
    assert text.index("old") < text.index("new run") < text.index("## RNN-T loss")
    assert text.rstrip().endswith("rnnt")

    fresh = tmp_path / "fresh.md"
    bench.append_to_section(fresh, "only run\n")
    assert fresh.read_text().startswith("# speechfm benchmarks\n")
    assert bench.SECTION_TITLE in fresh.read_text()


def test_config_validation_names_the_field(bench):
    with pytest.raises(ValueError, match="conv_kernel"):
        _tiny(bench, conv_kernel=4).validate()
    with pytest.raises(ValueError, match="mode"):
        _tiny(bench, modes=("backward",)).validate()


def test_cli_size_defaults_follow_the_device(bench):
    parser = bench._parser()
    cpu = bench.config_from_args(parser.parse_args(["--device", "cpu", "--layers", "3"]))
    assert (cpu.dim, cpu.num_layers, cpu.batch_size) == (bench.BenchConfig().dim, 3, 4)
    gpu = bench.config_from_args(parser.parse_args(["--device", "cuda", "--iters", "7"]))
    assert gpu.dim == bench.GPU_DEFAULTS["dim"] and gpu.num_layers == 24
    assert gpu.iters == 7 and gpu.device == "cuda"
    gpu.validate()
