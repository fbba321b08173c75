"""Throughput of the speechfm Conformer encoder against transformers' ``Wav2Vec2BertModel``.

Both encoders are built at the same configuration (dims, heads, FFN, causal depthwise kernel
without conv biases, Shaw ``relative_key`` positions with the same clipping, LayerNorm +
linear projection of 160-dim stacked fbank, dropouts off); HF's weights are copied into ours
and the outputs compared; then forward (eval) and forward+backward (train mode) are timed on
the same padded batch, alternating the models every iteration so that outside load hits both
alike.  Ratio = ours/HF throughput (> 1: speechfm is faster).  On CUDA, bf16 autocast rows
and MFU (analytic :func:`encoder_flops` over :data:`PEAK_BF16_FLOPS`) are added.

Usage (repository root)::

    .venv/bin/python bench/conformer.py --threads 2 --out bench/RESULTS.md

Needs the ``hf`` extra (``transformers``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PEAK_BF16_FLOPS",
    "SECTION_TITLE",
    "Batch",
    "BenchConfig",
    "BenchResult",
    "GPU_DEFAULTS",
    "Row",
    "append_to_section",
    "build_models",
    "config_from_args",
    "encoder_flops",
    "format_report",
    "main",
    "make_batch",
    "max_output_difference",
    "peak_bf16_flops",
    "run_benchmark",
    "speechfm_config",
]

SECTION_TITLE = "## Conformer encoder vs transformers Wav2Vec2BertModel"

# Peak dense (no sparsity) bf16 tensor FLOP/s from the vendors' data sheets, matched as a
# lower-case substring of torch.cuda.get_device_name(); the first match wins, so the more
# specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("gb200", 2.5e15),
    ("b200", 2.25e15),
    ("gh200", 989e12),
    ("h200", 989e12),
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),
    ("h800", 989e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("l40s", 362e12),
    ("l40", 181e12),
    ("l4", 121e12),
    ("rtx 4090", 165e12),
)

# Environment that changes CPU results (allocator, glibc tunables); echoed in the report.
_ENV_VARS = ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF", "OMP_NUM_THREADS")

FBANK_FRAME_RATE = 100.0  # fbank frames per second (10 ms shift)
STACK = 2  # w2v-BERT 2.0 stacks two 80-dim frames into one 160-dim frame
FBANK_DIM = 80


@dataclass(kw_only=True)
class BenchConfig:
    """One benchmark run: the shared encoder configuration, the batch and the timing."""

    dim: int = 256
    """Model width C (HF hidden_size)."""
    num_layers: int = 12
    """Conformer blocks (HF num_hidden_layers)."""
    num_heads: int = 4
    """Attention heads."""
    ffn_dim: int = 1024
    """FFN inner size (HF intermediate_size)."""
    conv_kernel: int = 31
    """Causal depthwise kernel (HF conv_depthwise_kernel_size)."""
    rel_left_max: int = 64
    """relative_key clipping into the past (HF left_max_position_embeddings)."""
    rel_right_max: int = 8
    """relative_key clipping into the future (HF right_max_position_embeddings)."""
    batch_size: int = 4
    """Utterances N per batch."""
    seconds: float = 10.0
    """Duration of the longest utterance in seconds (100 fbank frames/s, stacked by 2)."""
    min_fraction: float = 0.7
    """The shortest utterance is this fraction of the longest; lengths are evenly spread."""
    warmup: int = 2
    """Untimed iterations per model and mode."""
    iters: int = 10
    """Timed iterations per model and mode (the median is reported)."""
    threads: int | None = None
    """torch.set_num_threads; None keeps torch's default."""
    device: str = "auto"
    """"auto" (CUDA if available), "cpu" or "cuda[:i]"."""
    modes: tuple[str, ...] = ("forward", "forward+backward")
    """What to time: "forward" (eval, no grad) and/or "forward+backward" (train mode)."""
    dtypes: tuple[str, ...] | None = None
    """"fp32" and/or "bf16" (CUDA autocast); None = fp32 on CPU, fp32 and bf16 on CUDA."""
    hf_attn_implementation: str = "sdpa"
    """transformers attention backend: "sdpa" (its default) or "eager"."""
    peak_flops: float | None = None
    """Peak dense bf16 FLOP/s for MFU; None = looked up from the device name."""
    target: float | None = None
    """Ratio to reach; None = 1.5 on CPU, 1.3 on GPU."""
    seed: int = 0
    """Seed of the weights and the batch."""

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if min(self.dim, self.num_layers, self.num_heads, self.ffn_dim, self.batch_size) <= 0:
            raise ValueError("dim, num_layers, num_heads, ffn_dim and batch_size must be positive")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and positive, got {self.conv_kernel}")
        if self.rel_left_max < 0 or self.rel_right_max < 0:
            raise ValueError("rel_left_max and rel_right_max must be >= 0")
        if self.num_frames < 1:
            raise ValueError(f"seconds={self.seconds} gives no stacked frame")
        if not 0.0 < self.min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in (0, 1], got {self.min_fraction}")
        if self.warmup < 0 or self.iters < 1:
            raise ValueError(f"need warmup >= 0 and iters >= 1, got {self.warmup}, {self.iters}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for mode in self.modes:
            if mode not in ("forward", "forward+backward"):
                raise ValueError(f"unknown mode {mode!r}")
        for dtype in self.dtypes or ():
            if dtype not in ("fp32", "bf16"):
                raise ValueError(f"unknown dtype {dtype!r}; expected fp32 or bf16")
        if self.hf_attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"hf_attn_implementation must be sdpa or eager, got {self.hf_attn_implementation!r}"
            )

    @property
    def num_frames(self) -> int:
        """T: stacked (encoder) frames of the longest utterance."""
        return int(round(self.seconds * FBANK_FRAME_RATE)) // STACK


@dataclass
class Batch:
    """The same padded batch in both models' input formats.

    ``fbank`` (N, 2T, 80) zero past ``fbank_lens`` (N,) is speechfm's input; ``stacked``
    (N, T, 160), the same frames in pairs, with ``mask`` (N, T) int64 is HF's; ``lens`` (N,)
    counts valid stacked frames.
    """

    fbank: torch.Tensor
    fbank_lens: torch.Tensor
    stacked: torch.Tensor
    mask: torch.Tensor
    lens: torch.Tensor


@dataclass
class Row:
    """Timing of one (mode, dtype) for both models."""

    mode: str
    dtype: str
    ours_s: float
    """Median seconds per batch, speechfm."""
    hf_s: float
    """Median seconds per batch, transformers."""
    paired_ratios: list[float]
    """hf/ours time of each interleaved iteration pair (spread = noise)."""
    ours_faults: int
    """Median minor page faults per iteration, speechfm (host memory mapped afresh)."""
    hf_faults: int
    """Median minor page faults per iteration, transformers."""
    valid_frames: int
    utterances: int
    flops: float
    """Analytic model FLOPs of one batch (forward, or x3 for forward+backward)."""
    peak_flops: float | None
    """Peak FLOP/s that MFU refers to; None = no MFU for this row."""
    target: float

    @property
    def ratio(self) -> float:
        """Median over interleaved pairs of HF time / our time (= ours/HF throughput).

        Each pair runs back to back, so load from other processes mostly cancels in its
        ratio; the ratio of the two medians would not cancel it.
        """
        return statistics.median(self.paired_ratios)

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target

    def mfu(self, seconds: float) -> float | None:
        """Model FLOP utilisation at ``seconds`` per batch, or None without a peak."""
        if self.peak_flops is None:
            return None
        return self.flops / seconds / self.peak_flops


@dataclass
class BenchResult:
    """Everything :func:`format_report` prints."""

    config: BenchConfig
    device_name: str
    device_type: str
    """"cpu" or "cuda"."""
    ours_params: int
    hf_params: int
    max_abs_diff: float
    """Largest |ours - HF| over valid output frames (fp32, eval, same weights)."""
    rows: list[Row]
    threads: int
    hf_attn: str
    """The attention implementation HF actually ran."""
    load: tuple[float, float]
    """1-minute load average of the machine before and after timing (other processes)."""


# ----------------------------------------------------------------------------- models


def speechfm_config(cfg: BenchConfig):
    """The :class:`~speechfm.models.conformer.ConformerConfig` of ``cfg``'s encoder.

    HF's side is :func:`speechfm.models.conformer.interop.hf_config_from_conformer` of it.
    """
    from speechfm.models.conformer import ConformerConfig

    return ConformerConfig(
        input_dim=FBANK_DIM,
        front_end="stack",
        subsampling_factor=STACK,
        dim=cfg.dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        conv_kernel=cfg.conv_kernel,
        conv_causal=True,  # HF pads the depthwise conv on the left only
        conv_norm="layer_norm",
        conv_bias=False,  # HF's three conv-module convolutions have no bias
        pos_type="relative_key",
        rel_left_max=cfg.rel_left_max,
        rel_right_max=cfg.rel_right_max,
        dropout=0.0,
        attn_dropout=0.0,
        layer_drop=0.0,
        final_norm=False,  # each block already ends in a LayerNorm, as in HF
    )


def build_models(cfg: BenchConfig, device: torch.device):
    """(ours, hf): the two equal encoders on ``device``, ours holding HF's weights.

    HF's weights are perturbed first (LayerNorms start at identity) so that the output
    comparison also checks every LayerNorm and bias mapping.  The HF configuration and the
    weight copy come from :mod:`speechfm.models.conformer.interop`.
    """
    from transformers import Wav2Vec2BertModel

    from speechfm.models.conformer import create_conformer_encoder
    from speechfm.models.conformer.interop import hf_config_from_conformer, load_hf_weights

    torch.manual_seed(cfg.seed)
    ours_config = speechfm_config(cfg)
    config = hf_config_from_conformer(ours_config)
    config._attn_implementation = cfg.hf_attn_implementation
    try:
        hf = Wav2Vec2BertModel(config)
    except ValueError:  # older transformers: no SDPA path for this model
        config._attn_implementation = "eager"
        hf = Wav2Vec2BertModel(config)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    ours = create_conformer_encoder(ours_config)
    load_hf_weights(ours, hf)
    return ours.to(device), hf.to(device)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_batch(cfg: BenchConfig, device: torch.device) -> Batch:
    """A deterministic padded batch: lengths spread evenly from ``min_fraction`` x T to T."""
    n, t = cfg.batch_size, cfg.num_frames
    fractions = torch.linspace(cfg.min_fraction, 1.0, n, dtype=torch.float64)
    lens = (fractions * t).round().clamp(1, t).to(torch.int64)
    lens[-1] = t
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    fbank = torch.randn(n, STACK * t, FBANK_DIM, generator=gen)
    fbank_lens = lens * STACK
    valid = torch.arange(STACK * t).unsqueeze(0) < fbank_lens.unsqueeze(1)
    fbank = fbank.masked_fill(~valid.unsqueeze(-1), 0.0)
    stacked = fbank.reshape(n, t, STACK * FBANK_DIM)
    mask = (torch.arange(t).unsqueeze(0) < lens.unsqueeze(1)).to(torch.int64)
    return Batch(
        fbank=fbank.to(device),
        fbank_lens=fbank_lens.to(device),
        stacked=stacked.to(device),
        mask=mask.to(device),
        lens=lens.to(device),
    )


@torch.no_grad()
def max_output_difference(ours, hf, batch: Batch) -> float:
    """Largest |ours - HF| over the valid output frames, both in eval mode (float32)."""
    ours.eval()
    hf.eval()
    a, a_lens = ours(batch.fbank, batch.fbank_lens)
    b = hf(input_features=batch.stacked, attention_mask=batch.mask).last_hidden_state
    if not torch.equal(a_lens, batch.lens):
        raise RuntimeError(f"speechfm output lengths {a_lens.tolist()} != {batch.lens.tolist()}")
    valid = batch.mask.bool()
    return float((a - b).abs()[valid].max())


# ----------------------------------------------------------------------------- FLOPs


def encoder_flops(cfg: BenchConfig, batch_size: int, num_frames: int, backward: bool) -> float:
    """Analytic model FLOPs (2 x multiply-accumulates) of one padded batch.

    Counted per frame: the feature projection (160 C); per layer two FFNs (4 C F), the
    q/k/v/out projections (4 C^2), attention scores and weighted values (2 T C), the
    relative_key term q E^T over the P = left + right + 1 distances (P C), and the
    convolution module (2 C^2 + K C + C^2).  Norms, activations, softmax and the gather are
    left out (they are not matmuls).  HF computes the positional term against a (T, T, d)
    embedding (T C instead of P C); MFU counts the cheaper formulation for both, as model
    FLOPs do.  Backward is counted as twice the forward.
    """
    c, f, k, t = cfg.dim, cfg.ffn_dim, cfg.conv_kernel, num_frames
    p = cfg.rel_left_max + cfg.rel_right_max + 1
    per_layer = 4 * c * f + 4 * c * c + 2 * t * c + p * c + 3 * c * c + k * c
    macs = batch_size * t * (FBANK_DIM * STACK * c + cfg.num_layers * per_layer)
    return 2.0 * macs * (3.0 if backward else 1.0)


def peak_bf16_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device from its name, or None if unknown."""
    name = device_name.lower()
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _minor_faults() -> int:
    import resource  # Unix only, like the benchmark's CPU numbers

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_interleaved(
    fns: dict[str, Callable[[], None]], warmup: int, iters: int, sync: Callable[[], None]
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds and minor page faults per call of each function, alternating the order.

    Page faults matter on CPU: glibc maps every block over 32 MiB afresh and unmaps it on
    free, so a model that allocates large temporaries pays kernel time on every call.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
            sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else names[::-1]:
            sync()
            before = _minor_faults()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            faults[name].append(_minor_faults() - before)
    return times, faults


@contextlib.contextmanager
def _no_tf32():
    """True fp32 for matmuls and cuDNN convolutions alike.

    cuDNN allows TF32 by default while matmuls do not, which would speed up HF's 1x1
    ``Conv1d`` pointwise layers but not our ``nn.Linear`` ones in the "fp32" rows.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def _step_functions(
    ours, hf, batch: Batch, mode: str, dtype: str, device: torch.device
) -> dict[str, Callable[[], None]]:
    autocast = dtype == "bf16"

    def ctx():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast)

    def run_ours() -> torch.Tensor:
        return ours(batch.fbank, batch.fbank_lens)[0]

    def run_hf() -> torch.Tensor:
        return hf(input_features=batch.stacked, attention_mask=batch.mask).last_hidden_state

    def forward(model, run):
        def step() -> None:
            with torch.inference_mode(), ctx():
                run()

        model.eval()
        return step

    def train(model, run):
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with ctx():
                out = run()
            out.float().mean().backward()

        model.train()
        return step

    make = forward if mode == "forward" else train
    return {"ours": make(ours, run_ours), "hf": make(hf, run_hf)}


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> BenchResult:
    """Build both encoders, check they compute the same function, and time them.

    Args:
        cfg: the run.
        log: progress sink (e.g. ``print``); None = silent.
    """
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    dtypes = cfg.dtypes or (("fp32", "bf16") if cuda else ("fp32",))
    if "bf16" in dtypes and not cuda:
        raise ValueError("bf16 autocast is benchmarked on CUDA only")
    device_name = torch.cuda.get_device_name(device) if cuda else _cpu_name()
    peak = (
        cfg.peak_flops
        if cfg.peak_flops is not None
        else (peak_bf16_flops(device_name) if cuda else None)
    )
    target = cfg.target if cfg.target is not None else (1.3 if cuda else 1.5)
    say = log or (lambda _msg: None)

    ours, hf = build_models(cfg, device)
    batch = make_batch(cfg, device)
    with _no_tf32():
        diff = max_output_difference(ours, hf, batch)
    say(f"parity: max |speechfm - HF| on valid frames = {diff:.2e}")
    sync = _sync(device)
    load_before = _load_average()
    rows = []
    for dtype in dtypes:
        for mode in cfg.modes:
            fns = _step_functions(ours, hf, batch, mode, dtype, device)
            with _no_tf32():
                times, faults = _time_interleaved(fns, cfg.warmup, cfg.iters, sync)
            row = Row(
                mode=mode,
                dtype=dtype,
                ours_s=statistics.median(times["ours"]),
                hf_s=statistics.median(times["hf"]),
                paired_ratios=[h / o for o, h in zip(times["ours"], times["hf"], strict=True)],
                ours_faults=int(statistics.median(faults["ours"])),
                hf_faults=int(statistics.median(faults["hf"])),
                valid_frames=int(batch.lens.sum()),
                utterances=cfg.batch_size,
                flops=encoder_flops(
                    cfg, cfg.batch_size, cfg.num_frames, backward=mode != "forward"
                ),
                # The looked-up peak is bf16's; an explicit --peak-tflops applies to all rows.
                peak_flops=peak if dtype == "bf16" or cfg.peak_flops is not None else None,
                target=target,
            )
            say(
                f"{mode:>16} {dtype}: speechfm {row.ours_s * 1e3:8.1f} ms, "
                f"HF {row.hf_s * 1e3:8.1f} ms, ratio {row.ratio:.2f}"
            )
            rows.append(row)
    return BenchResult(
        config=cfg,
        device_name=device_name,
        device_type=device.type,
        ours_params=count_parameters(ours),
        hf_params=count_parameters(hf),
        max_abs_diff=diff,
        rows=rows,
        threads=torch.get_num_threads(),
        hf_attn=hf.config._attn_implementation,
        load=(load_before, _load_average()),
    )


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- report


def _fmt_compute(row: Row, seconds: float) -> str:
    """Achieved model TFLOP/s, with MFU in parentheses when a peak applies."""
    text = f"{row.flops / seconds / 1e12:.3g}"
    mfu = row.mfu(seconds)
    return text if mfu is None else f"{text} ({100 * mfu:.1f}%)"


def format_report(result: BenchResult, command: str | None = None) -> str:
    """Markdown: run header, parameter counts, parity, and the throughput table."""
    import transformers

    cfg = result.config
    plural = "" if result.threads == 1 else "s"
    kind = "GPU" if result.device_type == "cuda" else f"CPU, {result.threads} thread{plural}"
    lines = [
        f"### {datetime.date.today().isoformat()}: {cfg.num_layers} x {cfg.dim}, batch "
        f"{cfg.batch_size} x {cfg.seconds:g} s on {result.device_name} ({kind})",
        "",
    ]
    if command:
        env = " ".join(f"{k}={os.environ[k]}" for k in _ENV_VARS if os.environ.get(k))
        lines.append(f"- command: `{env + ' ' if env else ''}{command}`")
    lines += [
        f"- device: {result.device_name}; torch {torch.__version__}, transformers "
        f"{transformers.__version__} (attention: {result.hf_attn}); "
        f"threads {result.threads}; load average {result.load[0]:.2f} before, "
        f"{result.load[1]:.2f} after timing",
        f"- config: {cfg.num_layers} layers x {cfg.dim}, {cfg.num_heads} heads, FFN "
        f"{cfg.ffn_dim}, causal kernel {cfg.conv_kernel}, no conv biases, relative_key "
        f"{cfg.rel_left_max}/{cfg.rel_right_max}, 160-dim stacked input, dropout and layer "
        f"drop off; batch {cfg.batch_size} x {cfg.num_frames} frames ({cfg.seconds:g} s, "
        f"lengths {cfg.min_fraction:g}-1 of it, padding-masked)",
        f"- parameters: speechfm {result.ours_params:,}, HF {result.hf_params:,}; "
        f"max |speechfm - HF| on valid frames with HF's weights: {result.max_abs_diff:.1e}",
        f"- timing: {cfg.warmup} warm-up + {cfg.iters} iterations per model, alternating "
        "which runs first; ms = median; ratio = median over back-to-back pairs of HF time / "
        "speechfm time (pair range beside it); TFLOP/s from bench/conformer.py "
        "encoder_flops, MFU against the peak dense bf16 FLOP/s"
        + ("; fp32 rows with TF32 off, bf16 = autocast" if result.device_type == "cuda" else ""),
        "",
        "| mode | dtype | speechfm ms | HF ms | speechfm frames/s | HF frames/s "
        "| ratio ours/HF | pair range | target | speechfm TFLOP/s (MFU) | HF TFLOP/s (MFU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in result.rows:
        status = "PASS" if row.passed else "MISS"
        lo, hi = min(row.paired_ratios), max(row.paired_ratios)
        lines.append(
            f"| {row.mode} | {row.dtype} | {row.ours_s * 1e3:.1f} | {row.hf_s * 1e3:.1f} "
            f"| {row.valid_frames / row.ours_s:,.0f} | {row.valid_frames / row.hf_s:,.0f} "
            f"| **{row.ratio:.2f}x** | {lo:.2f}-{hi:.2f} | >= {row.target:g} {status} "
            f"| {_fmt_compute(row, row.ours_s)} | {_fmt_compute(row, row.hf_s)} |"
        )
    lines.append("")
    faults = "; ".join(
        f"{r.mode} {r.dtype}: speechfm {r.ours_faults:,}, HF {r.hf_faults:,}" for r in result.rows
    )
    lines += [f"Minor page faults per iteration (median): {faults}.", ""]
    return "\n".join(lines)


def append_to_section(path: Path, text: str, title: str = SECTION_TITLE) -> None:
    """Append ``text`` at the end of the section ``title`` of a markdown file.

    The file (with a top-level heading) and the section are created when absent; other
    sections are left untouched, so several benchmarks can share one RESULTS.md.
    """
    path = Path(path)
    text_in = path.read_text() if path.exists() else "# speechfm benchmarks\n"
    lines = text_in.rstrip("\n").splitlines()
    if title not in lines:
        lines += ["", title]
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    head, tail = lines[:end], lines[end:]
    while head and not head[-1].strip():
        head.pop()
    out = [*head, "", *text.rstrip("\n").splitlines(), *(["", *tail] if tail else [])]
    path.write_text("\n".join(out) + "\n")


# ----------------------------------------------------------------------------- CLI


# Defaults on CUDA: the 12 x 256 CPU size only measures kernel-launch latency on a large
# GPU, so GPUs default to the w2v-BERT 2.0 dimensions (conformer_large) and a bigger batch.
GPU_DEFAULTS: dict[str, Any] = dict(
    dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, batch_size=8, warmup=5, iters=20
)

# Flags whose default depends on the device: flag -> (BenchConfig field, help).
_SIZE_FLAGS = {
    "--dim": ("dim", "model width"),
    "--layers": ("num_layers", "conformer blocks"),
    "--heads": ("num_heads", "attention heads"),
    "--ffn-dim": ("ffn_dim", "FFN inner size"),
    "--kernel": ("conv_kernel", "depthwise kernel (odd)"),
    "--left-max": ("rel_left_max", "relative_key left clipping"),
    "--right-max": ("rel_right_max", "relative_key right clipping"),
    "--batch-size": ("batch_size", "utterances per batch"),
    "--seconds": ("seconds", "longest utterance (s)"),
    "--min-fraction": ("min_fraction", "shortest / longest utterance"),
    "--warmup": ("warmup", "untimed iterations per model and mode"),
    "--iters": ("iters", "timed iterations per model and mode"),
}


def _parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        description="speechfm Conformer encoder vs transformers Wav2Vec2BertModel throughput. "
        f"Size defaults: CPU {d.num_layers} x {d.dim}, batch {d.batch_size} x {d.seconds:g} s; "
        f"CUDA {GPU_DEFAULTS['num_layers']} x {GPU_DEFAULTS['dim']}, batch "
        f"{GPU_DEFAULTS['batch_size']} x {d.seconds:g} s."
    )
    for flag, (name, text) in _SIZE_FLAGS.items():
        p.add_argument(flag, dest=name, type=type(getattr(d, name)), help=text)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda[:i]")
    p.add_argument(
        "--modes", default=",".join(d.modes), help="comma list of forward, forward+backward"
    )
    p.add_argument("--dtypes", default=None, help="comma list of fp32, bf16 (CUDA)")
    p.add_argument("--hf-attn", default=d.hf_attn_implementation, choices=("sdpa", "eager"))
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU"
    )
    p.add_argument("--target", type=float, default=None, help="ratio target (1.5 CPU, 1.3 GPU)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=None, help="append the report to this markdown")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """BenchConfig from parsed CLI flags, size defaults chosen by the resolved device."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    fields: dict[str, Any] = dict(GPU_DEFAULTS) if device.startswith("cuda") else {}
    for name, _ in _SIZE_FLAGS.values():
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return BenchConfig(
        **fields,
        threads=args.threads,
        device=device,
        modes=tuple(m for m in args.modes.split(",") if m),
        dtypes=None if args.dtypes is None else tuple(x for x in args.dtypes.split(",") if x),
        hf_attn_implementation=args.hf_attn,
        peak_flops=None if args.peak_tflops is None else args.peak_tflops * 1e12,
        target=args.target,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("bench/conformer.py needs transformers: pip install 'speechfm[hf]'", file=sys.stderr)
        return 2
    result = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    report = format_report(result, command if argv is None else None)
    print()
    print(report)
    if args.out is not None:
        append_to_section(args.out, report)
        print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
