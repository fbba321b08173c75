"""Build-on-first-use of the kernels: clear errors, the pure-PyTorch fallback, imports."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from speechfm.errors import SpeechfmError
from speechfm.ops import _build, rnnt
from speechfm.ops._build import KernelBuildError


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-speechfm")
    with pytest.raises(KernelBuildError, match="no C.. compiler found.*no-such-compiler-speechfm"):
        _build._load()
    assert issubclass(KernelBuildError, SpeechfmError)


def test_missing_sources_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHFM_KERNEL_SRC", str(tmp_path))
    with pytest.raises(KernelBuildError, match="sources are not at .*bindings.cpp"):
        _build._load()


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHFM_CACHE_DIR", str(tmp_path / "c"))
    assert _build.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPEECHFM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert _build.cache_dir() == tmp_path / "x" / "speechfm"


def test_auto_backend_falls_back_to_pytorch(monkeypatch):
    def broken():
        raise KernelBuildError("no C++ compiler found (test)")

    monkeypatch.setattr(rnnt, "load_rnnt_extension", broken)
    monkeypatch.setattr(rnnt, "_warned", set())
    logits = torch.randn(2, 3, 2, 4)
    targets = torch.tensor([[1], [2]])
    lengths = torch.tensor([3, 2])
    with pytest.warns(RuntimeWarning, match="pure-PyTorch"):
        auto = rnnt.rnnt_loss(logits, targets, lengths, torch.tensor([1, 1]))
    torch.testing.assert_close(
        auto, rnnt.rnnt_loss(logits, targets, lengths, torch.tensor([1, 1]), backend="torch"))
    with pytest.raises(KernelBuildError):
        rnnt.rnnt_loss(logits, targets, lengths, torch.tensor([1, 1]), backend="extension")
    with warnings.catch_warnings():  # warned once per process
        warnings.simplefilter("error")
        rnnt.rnnt_loss(logits, targets, lengths, torch.tensor([1, 1]))


def test_import_needs_torch_only():
    code = (
        "import sys, speechfm.ops\n"
        "heavy = [m for m in ('lhotse', 'soundfile', 'speechfm.data', "
        "'speechfm.text', 'speechfm.models') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not any(m.startswith('speechfm_rnnt') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
