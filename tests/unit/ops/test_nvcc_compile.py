"""The CUDA sources compile (nvcc, sm_80 and sm_90, warnings as errors) where nvcc exists.

tools/nvcc_check.sh caches a success keyed by a hash of the sources, so reruns on
unchanged sources are instant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which(os.environ.get("NVCC", "nvcc")) is None,
                    reason="nvcc is not on PATH")
def test_cuda_sources_compile(repo_root):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(repo_root / "tools" / "nvcc_check.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[nvcc_check] " in proc.stdout and "ok" in proc.stdout
