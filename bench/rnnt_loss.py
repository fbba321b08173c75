"""Benchmark of speechfm's RNN-T loss: forward + backward time, peak memory, bandwidth.

Compares, in one run and on the same inputs:

- ``speechfm``: the compiled kernels (CUDA, or C++ on CPU);
- ``torch``: speechfm's pure-PyTorch implementation (vectorised over lattice diagonals);
- ``torchaudio``: ``torchaudio.functional.rnnt_loss(fused_log_softmax=True)``, when
  torchaudio can be imported (GPU runs only);

and, per shape, the pruned loss (simple loss + prune ranges + pruned loss with
``s_range=5``) against the full loss. On a GPU it also measures the achievable memory
bandwidth with a large device copy and reports the fraction of the bandwidth floor
(2 reads + 1 write of the logits) that the fused loss reaches.

    python bench/rnnt_loss.py                       # GPU shapes if CUDA is available
    python bench/rnnt_loss.py --cpu-shapes          # CPU: C++ path vs pure PyTorch
    python bench/rnnt_loss.py --out bench/RESULTS.md

``--out`` rewrites only this benchmark's section of the markdown file ("## RNN-T loss
(bench/rnnt_loss.py)"), and within it only the CPU or the GPU subsection, so several
benchmarks and devices can share one RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechfm.ops.pruned_rnnt import (  # noqa: E402
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)
from speechfm.ops.rnnt import rnnt_loss  # noqa: E402

GPU_SHAPES = [(30, 400, 80, 500), (16, 150, 20, 5000), (8, 1500, 300, 50)]
CPU_SHAPES = [(4, 100, 20, 100), (8, 50, 10, 500), (2, 300, 60, 32)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mib(fn, device: torch.device) -> float | None:
    """Peak memory allocated while fn() runs, above what was allocated before, in MiB."""
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _copy_bandwidth(device: torch.device) -> float:
    """Achievable device memory bandwidth (bytes/s) from a 2 GiB copy."""
    n = 2**29  # 2 GiB of float32
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = _time(functools.partial(dst.copy_, src), device, repeat=10, warmup=2)
    return 2 * n * 4 / (ms * 1e-3)


def _inputs(shape, dtype, device, seed=0):
    N, T, U, V = shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    logits = torch.randn(N, T, U + 1, V, generator=g).to(device=device, dtype=dtype)
    targets = torch.randint(1, V, (N, U), generator=g).to(device)
    logit_lengths = torch.full((N,), T, dtype=torch.long).to(device)
    target_lengths = torch.full((N,), U, dtype=torch.long).to(device)
    return logits, targets, logit_lengths, target_lengths


def _full_step(impl, logits, targets, tl, ul):
    x = logits.detach().requires_grad_()
    if impl == "torchaudio":
        import torchaudio

        loss = torchaudio.functional.rnnt_loss(x, targets.int(), tl.int(), ul.int(), blank=0,
                                               reduction="sum", fused_log_softmax=True)
    else:
        backend = "extension" if impl == "speechfm" else "torch"
        loss = rnnt_loss(x, targets, tl, ul, reduction="sum", backend=backend, validate=False)
    loss.backward()
    return x.grad


def _pruned_step(am, lm, logits_pruned, targets, tl, ul, backend):
    a = am.detach().requires_grad_()
    m = lm.detach().requires_grad_()
    simple, (px_grad, py_grad) = rnnt_loss_simple(a, m, targets, tl, ul, reduction="sum",
                                                   return_grad=True, validate=False,
                                                   backend=backend)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range=5)
    x = logits_pruned.detach().requires_grad_()
    pruned = rnnt_loss_pruned(x, targets, ranges, tl, ul, reduction="sum", validate=False,
                              backend=backend)
    (simple + pruned).backward()


def _have_torchaudio() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def run(shapes, dtypes, device, repeat):
    rows, notes = [], []
    bandwidth = _copy_bandwidth(device) if device.type == "cuda" else None
    impls = ["speechfm", "torch"]
    if device.type == "cuda" and _have_torchaudio():
        impls.append("torchaudio")
    elif device.type == "cuda":
        notes.append("torchaudio could not be imported: no torchaudio column.")
    for shape in shapes:
        N, T, U, V = shape
        for dname in dtypes:
            dtype = DTYPES[dname]
            inputs = _inputs(shape, dtype, device)
            result = {"shape": shape, "dtype": dname, "ms": {}, "mib": {}}
            for impl in impls:
                if impl == "torchaudio" and dtype == torch.bfloat16:
                    continue  # torchaudio's kernel takes float32 / float16 only
                step = functools.partial(_full_step, impl, *inputs)
                try:
                    result["ms"][impl] = _time(step, device, repeat)
                    result["mib"][impl] = _peak_mib(step, device)
                except torch.OutOfMemoryError:
                    notes.append(f"{impl} ran out of memory at {shape} {dname}.")
                    torch.cuda.empty_cache()
            logits = inputs[0]
            result["floor_ms"] = (3 * logits.numel() * logits.element_size() / bandwidth * 1e3
                                  if bandwidth else None)
            # Pruned loss (s_range = 5) vs the full loss, same kernels.
            g = torch.Generator(device="cpu").manual_seed(1)
            am = torch.randn(N, T, V, generator=g).to(device=device, dtype=dtype)
            lm = torch.randn(N, U + 1, V, generator=g).to(device=device, dtype=dtype)
            R = min(5, U + 1)
            lp = torch.randn(N, T, R, V, generator=g).to(device=device, dtype=dtype)
            step = functools.partial(_pruned_step, am, lm, lp, *inputs[1:], "extension")
            result["pruned_ms"] = _time(step, device, repeat)
            inputs = logits = am = lm = lp = step = None  # free device memory before the next shape
            rows.append(result)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, notes, bandwidth


def _fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(rows, notes, bandwidth, device, repeat) -> str:
    impls = [i for i in ("speechfm", "torch", "torchaudio") if any(i in r["ms"] for r in rows)]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({_cpu_name()}, {torch.get_num_threads()} threads)")
    lines = [f"Device: {dev_name}; torch {torch.__version__}; median of {repeat} runs of "
             "forward + backward (reduction='sum').", ""]
    if bandwidth:
        lines.append(f"Achievable bandwidth (2 GiB device copy): {bandwidth / 1e9:.0f} GB/s; "
                     "floor = (2 reads + 1 write of the logits) / that bandwidth.")
        lines.append("")
    head = ["(N, T, U, V)", "dtype"] + [f"{i} ms" for i in impls]
    if device.type == "cuda":
        head += [f"{i} MiB" for i in impls] + ["floor ms", "speechfm % of floor"]
    head += ["torch / speechfm"] + (["torchaudio / speechfm"] if "torchaudio" in impls else [])
    head += ["pruned ms (s_range=5)", "full / pruned"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        ms = r["ms"]
        ours = ms.get("speechfm")
        cells = [str(r["shape"]), r["dtype"]] + [_fmt(ms.get(i), 2) for i in impls]
        if device.type == "cuda":
            cells += [_fmt(r["mib"].get(i), 0) for i in impls]
            frac = 100 * r["floor_ms"] / ours if ours and r["floor_ms"] else None
            cells += [_fmt(r["floor_ms"], 3), _fmt(frac, 0)]
        cells.append(_fmt(ms["torch"] / ours, 1) + "x" if ours and "torch" in ms else "-")
        if "torchaudio" in impls:
            cells.append(_fmt(ms["torchaudio"] / ours, 2) + "x" if ours and "torchaudio" in ms
                         else "-")
        cells += [_fmt(r["pruned_ms"], 2), _fmt(ours / r["pruned_ms"], 1) + "x" if ours else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


SECTION = "## RNN-T loss (bench/rnnt_loss.py)"
GPU_PLACEHOLDER = ("### GPU: not yet measured — no GPU in this session\n\nRun "
                   "`python bench/rnnt_loss.py --out bench/RESULTS.md` on a CUDA machine (it "
                   "replaces this subsection).\n")


def _split(lines, prefix):
    """Splits lines into (head, [(title, body lines)]) at lines starting with prefix."""
    head, parts = [], []
    for line in lines:
        if line.startswith(prefix):
            parts.append((line, []))
        elif parts:
            parts[-1][1].append(line)
        else:
            head.append(line)
    return head, parts


def update_results(path: Path, subsection_title: str, body: str) -> None:
    """Writes `body` under `subsection_title` in this benchmark's section of `path`.

    Other sections of the file and the other subsection (CPU / GPU) are kept.
    """
    text = path.read_text() if path.exists() else "# speechfm benchmarks\n"
    head, sections = _split(text.rstrip("\n").splitlines(), "## ")
    mine = next((i for i, (t, _) in enumerate(sections) if t == SECTION), None)
    if mine is None:
        sections.append((SECTION, []))
        mine = len(sections) - 1
    intro, subs = _split(sections[mine][1], "### ")
    kind = subsection_title.split(":")[0].split()[1]  # "CPU" or "GPU"
    subs = [(t, b) for t, b in subs if t.split(":")[0].split()[1] != kind]
    subs.append((subsection_title, ["", *body.rstrip("\n").splitlines(), ""]))
    if not any(t.startswith("### GPU") for t, _ in subs):
        t, *b = GPU_PLACEHOLDER.rstrip("\n").splitlines()
        subs.append((t, [*b, ""]))
    subs.sort(key=lambda tb: 0 if tb[0].startswith("### CPU") else 1)
    new_mine = intro or [""]
    for t, b in subs:
        new_mine += [t, *b]
    sections[mine] = (SECTION, new_mine)
    out = list(head)
    for t, b in sections:
        if out and out[-1] != "":
            out.append("")
        out += [t, *b]
    path.write_text("\n".join(out).rstrip("\n") + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--cpu-shapes", action="store_true",
                   help=f"use the CPU-sized shapes {CPU_SHAPES} (default on CPU)")
    p.add_argument("--shapes", default=None,
                   help="semicolon-separated N,T,U,V shapes, e.g. '4,100,20,100;2,50,5,30'")
    p.add_argument("--dtypes", default=None, help="comma list of fp32,bf16,fp16 "
                   "(default fp32,bf16 on GPU, fp32 on CPU)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs (default 10 GPU, 3 CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    elif args.cpu_shapes or device.type == "cpu":
        shapes = CPU_SHAPES
    else:
        shapes = GPU_SHAPES
    dtypes = (args.dtypes.split(",") if args.dtypes
              else (["fp32", "bf16"] if device.type == "cuda" else ["fp32"]))
    repeat = args.repeat or (10 if device.type == "cuda" else 3)
    rows, notes, bandwidth = run(shapes, dtypes, device, repeat)
    text = markdown(rows, notes, bandwidth, device, repeat)
    print(text)
    if args.out:
        command = "python bench/rnnt_loss.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if device.type == "cuda":
            title = f"### GPU: {torch.cuda.get_device_name(device)}"
        else:
            title = "### CPU: C++ kernels vs the pure-PyTorch implementation"
        update_results(Path(args.out), title, f"Command: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
