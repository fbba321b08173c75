"""Runs the CUDA kernels' own code on the CPU and compares it with the C++ CPU path.

The .cu sources are compiled as C++ against cuda/rnnt/cuda_emulation.h (one std::thread
per CUDA thread, real barriers and warp shuffles, a 2-SM "device"), so their index math,
vectorised row loops, grid-stride loops, shuffle reductions and the diagonal recursion
with several columns per thread are exercised without a GPU. The real GPU run is
tests/cuda/test_rnnt_cuda.py.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from speechfm.ops._build import (
    KernelBuildError,
    cache_dir,
    compile_library,
    kernel_source_dir,
    load_library,
)
from speechfm.ops.pruned_rnnt import _PrunedRNNTLoss
from speechfm.ops.rnnt import _MutualInformation, _RNNTLoss

_CUDA_SOURCES = ("rnnt_cuda.cu", "mutual_information_cuda.cu")
_HOST_SOURCES = ("bindings.cpp", "rnnt_cpu.cpp", "mutual_information_cpu.cpp")


def _emulation_source(text: str) -> str:
    text = re.sub(r"#include <cuda(_runtime|_fp16|_bf16)\.h>\n", "", text)
    text = re.sub(r"extern __shared__ __align__\(\d+\) unsigned char (\w+)\[\];",
                  r"unsigned char* \1 = sfm_emu::shared_memory();", text)
    text = re.sub(r"([\w:]+(?:<[^;<>]*>)?)<<<([^;]*?)>>>\(([^;]*)\);",
                  r"sfm_emu::launch(\1, \2, \3);", text)
    assert "<<<" not in text and "__shared__" not in text
    return '#include "cuda_emulation.h"\n' + text


@pytest.fixture(scope="module")
def emu_ops():
    src = kernel_source_dir()
    h = hashlib.sha256()
    for name in (*_CUDA_SOURCES, *_HOST_SOURCES, "rnnt_common.h", "rnnt_ops.h",
                 "cuda_emulation.h"):
        h.update((src / name).read_bytes())
    h.update(torch.__version__.encode())
    key = h.hexdigest()[:16]
    work = cache_dir() / "emulation-sources" / key
    work.mkdir(parents=True, exist_ok=True)
    sources = [str(src / n) for n in _HOST_SOURCES]
    for name in _CUDA_SOURCES:
        out = work / name.replace(".cu", "_emulated.cpp")
        out.write_text(_emulation_source((src / name).read_text()))
        sources.append(str(out))
    flags = ["-O2", "-pthread", "-DSPEECHFM_CUDA_EMULATION", "-DSFM_MI_MAX_THREADS=64"]
    try:
        lib = compile_library(f"speechfm_rnnt_emu_{key}", sources, [str(src)], flags, [], False)
    except KernelBuildError as e:
        if "no C++ compiler" in str(e):
            pytest.skip(str(e))
        raise
    load_library(lib)
    return torch.ops.speechfm_rnnt_emu


@pytest.fixture(scope="module")
def cpu_ops(extension):  # tests/unit/ops/conftest.py
    return extension.ops


def _batch(gen, N, T, U, V, dtype, ragged=True):
    logits = torch.randn(N, T, U + 1, V, generator=gen, dtype=torch.float64).to(dtype)
    targets = torch.randint(1, max(V, 2), (N, U), generator=gen) if V > 1 else torch.zeros(N, U, dtype=torch.long)
    if ragged:
        logit_lengths = torch.randint(1, T + 1, (N,), generator=gen)
        target_lengths = torch.randint(0, U + 1, (N,), generator=gen)
        logit_lengths[0], target_lengths[0] = T, U
    else:
        logit_lengths = torch.full((N,), T)
        target_lengths = torch.full((N,), U)
    if V == 1:
        target_lengths.zero_()
    return logits, targets, logit_lengths, target_lengths


def _loss_and_grad(ops, logits, targets, tl, ul, *, blank=0, clamp=0.0, fused=True,
                   inplace=False, offset=0):
    x = logits.detach()
    if offset:  # a storage offset moves the rows off 16-byte alignment
        buf = torch.empty(x.numel() + offset, dtype=x.dtype)
        x = buf[offset:].view_as(x).copy_(x)
    x = x.clone() if not offset else x
    x.requires_grad_(not inplace)
    if inplace:
        x = x.detach().requires_grad_()
        leaf = x
        x = x * 1.0  # a non-leaf whose memory may be overwritten
    else:
        leaf = x
    costs = _RNNTLoss.apply(x, targets, tl, ul, blank, clamp, fused, inplace, ops)
    weights = torch.linspace(0.5, 1.5, costs.numel(), dtype=costs.dtype)
    (costs * weights).sum().backward()
    return costs.detach(), leaf.grad.float()


@pytest.mark.parametrize(
    "dtype,V,fused,clamp,inplace,offset",
    [
        (torch.float32, 1, True, 0.0, False, 0),
        (torch.float32, 3, True, 0.0, False, 0),
        (torch.float32, 50, True, 0.0, False, 1),
        (torch.float32, 130, False, 0.0, False, 0),
        (torch.float32, 1000, True, 0.05, True, 0),
        (torch.float64, 37, True, 0.0, False, 1),
        (torch.float16, 50, True, 0.0, False, 3),
        (torch.bfloat16, 257, True, 0.0, True, 0),
        (torch.bfloat16, 64, False, 0.0, False, 0),
    ],
)
def test_rnnt_rows_match_cpu(emu_ops, cpu_ops, dtype, V, fused, clamp, inplace, offset):
    gen = torch.Generator().manual_seed(V)
    logits, targets, tl, ul = _batch(gen, 3, 4, 3, V, dtype)
    if not fused:
        logits = logits.float().log_softmax(-1).to(dtype)
    c_cpu, g_cpu = _loss_and_grad(cpu_ops, logits, targets, tl, ul, clamp=clamp, fused=fused)
    c_emu, g_emu = _loss_and_grad(emu_ops, logits, targets, tl, ul, clamp=clamp, fused=fused,
                                  inplace=inplace, offset=offset)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 1e-2)
    torch.testing.assert_close(c_emu, c_cpu, rtol=tol, atol=tol)
    torch.testing.assert_close(g_emu, g_cpu, rtol=tol, atol=tol)
    assert torch.isfinite(c_emu).all()


def test_rnnt_inf_heavy_rows_match_cpu(emu_ops, cpu_ops):
    gen = torch.Generator().manual_seed(7)
    logits, targets, tl, ul = _batch(gen, 2, 5, 2, 40, torch.float32)
    mask = torch.rand(logits.shape, generator=gen) < 0.7
    mask[..., 0] = False
    logits = logits.masked_fill(mask, float("-inf"))
    logits[1, 2, 1] = float("-inf")  # a whole row of -inf
    c_cpu, g_cpu = _loss_and_grad(cpu_ops, logits, targets, tl, ul)
    c_emu, g_emu = _loss_and_grad(emu_ops, logits, targets, tl, ul)
    torch.testing.assert_close(c_emu, c_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_emu, g_cpu, rtol=1e-5, atol=1e-5)
    assert not torch.isnan(g_emu).any()


@pytest.mark.parametrize("S,T", [(0, 5), (4, 1), (100, 3), (300, 2)])
def test_mutual_information_matches_cpu(emu_ops, cpu_ops, S, T):
    # With SFM_MI_MAX_THREADS=64, S + 1 = 101 and 301 use 2 and 8 columns per thread.
    gen = torch.Generator().manual_seed(S + T)
    N = 3
    px = torch.randn(N, S, T + 1, generator=gen, dtype=torch.float64)
    py = torch.randn(N, S + 1, T, generator=gen, dtype=torch.float64)
    boundary = torch.tensor([[0, 0, S, T], [min(1, S), min(1, T), S, T], [0, 0, S // 2, T]])
    for dtype in (torch.float64, torch.float32):
        outs = []
        for ops in (cpu_ops, emu_ops):
            a = px.to(dtype).clone().requires_grad_()
            b = py.to(dtype).clone().requires_grad_()
            ll = _MutualInformation.apply(a, b, boundary, False, ops)
            ll.sum().backward()
            outs.append((ll.detach(), a.grad, b.grad))
        for x, y in zip(*outs, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_mutual_information_bad_boundary_is_nan(emu_ops):
    px = torch.zeros(2, 3, 5)
    py = torch.zeros(2, 4, 4)
    boundary = torch.tensor([[0, 0, 3, 4], [0, 0, 5, 4]])
    ll, gx, gy = _MutualInformation.apply(px, py, boundary, True, emu_ops)
    assert torch.isfinite(ll[0]) and torch.isnan(ll[1])
    assert torch.isnan(gx[1]).all() and torch.isfinite(gx[0]).all()


def test_pruned_matches_cpu(emu_ops, cpu_ops):
    gen = torch.Generator().manual_seed(3)
    N, T, U, R, V = 2, 6, 5, 3, 33
    logits = torch.randn(N, T, R, V, generator=gen)
    targets = torch.randint(1, V, (N, U), generator=gen)
    tl, ul = torch.tensor([6, 4]), torch.tensor([5, 3])
    start = torch.tensor([[0, 0, 1, 2, 2, 3], [0, 1, 1, 1, 1, 1]])
    ranges = start.unsqueeze(-1) + torch.arange(R)
    outs = []
    for ops in (cpu_ops, emu_ops):
        x = logits.clone().requires_grad_()
        c = _PrunedRNNTLoss.apply(x, targets, ranges, tl, ul, 0, 0.0, True, False, ops)
        c.sum().backward()
        outs.append((c.detach(), x.grad))
    for x, y in zip(*outs, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_bad_values_poison_only_their_utterance(emu_ops):
    gen = torch.Generator().manual_seed(9)
    logits, targets, tl, ul = _batch(gen, 3, 4, 3, 6, torch.float32, ragged=False)
    tl[1] = 9  # beyond the tensor
    targets[2, 0] = 0  # the blank
    costs = _RNNTLoss.apply(logits, targets, tl, ul, 0, 0.0, True, False, emu_ops)
    assert torch.isfinite(costs[0]) and torch.isnan(costs[1:]).all()
