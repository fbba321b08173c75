"""Build-on-first-use of speechfm's C++/CUDA kernels (the sources in ``cuda/rnnt``).

The first call of :func:`load_rnnt_extension` in a process compiles the kernels with
``torch.utils.cpp_extension.load`` (or, when ninja is not installed, with setuptools and
the same PyTorch flags) into a cache directory and loads the shared library, which
registers the operators ``torch.ops.speechfm_rnnt.*``. Later processes load the cached
library directly. The cache entry is keyed by a hash of the sources, the build flags
and the PyTorch / Python / CUDA versions, so editing a source rebuilds it.

Environment variables:

- ``SPEECHFM_CACHE_DIR``: cache root (default ``$XDG_CACHE_HOME/speechfm`` or
  ``~/.cache/speechfm``); libraries go to ``<root>/extensions/<name>``.
- ``SPEECHFM_KERNEL_SRC``: the ``cuda/rnnt`` source directory (default: beside the
  ``speechfm`` package in a source checkout).
- ``SPEECHFM_NO_CUDA_BUILD=1``: build the CPU kernels only even where CUDA is available.
- ``SPEECHFM_NATIVE_ARCH=0``: do not tune the CPU code for this machine (``-march=native``).
- ``SPEECHFM_VERBOSE_BUILD=1``: show the compiler commands.
- ``CXX``: the C++ compiler (default ``c++``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from speechfm.errors import SpeechfmError

_SOURCES_CPU = ("bindings.cpp", "rnnt_cpu.cpp", "mutual_information_cpu.cpp", "simple_cpu.cpp")
_SOURCES_CUDA = ("rnnt_cuda.cu", "mutual_information_cuda.cu")
_HEADERS = ("rnnt_common.h", "rnnt_ops.h", "cpu_math.h", "cpu_parallel.h", "lattice_cpu.h")

_lock = threading.Lock()
_loaded: RNNTExtension | None = None


class KernelBuildError(SpeechfmError, RuntimeError):
    """The C++/CUDA kernels could not be built or loaded; the message says why."""


@dataclass(frozen=True)
class RNNTExtension:
    """A loaded kernel library."""

    path: Path
    """The shared library."""
    with_cuda: bool
    """Whether the CUDA kernels were compiled in (else CPU only)."""
    cuda_error: str | None = None
    """Why the CUDA kernels are missing when CUDA was wanted (their build failed)."""

    @property
    def ops(self):
        """The operator namespace ``torch.ops.speechfm_rnnt``."""
        import torch

        return torch.ops.speechfm_rnnt


def kernel_source_dir() -> Path:
    """The directory holding the kernel sources (``cuda/rnnt`` of a source checkout)."""
    env = os.environ.get("SPEECHFM_KERNEL_SRC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "cuda" / "rnnt"


def cache_dir() -> Path:
    """The root of speechfm's build cache."""
    env = os.environ.get("SPEECHFM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "speechfm"


def _cuda_wanted() -> bool:
    import torch

    if os.environ.get("SPEECHFM_NO_CUDA_BUILD", "0") not in ("", "0"):
        return False
    if torch.version.cuda is None or not torch.cuda.is_available():
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists()


def _native_arch_flags() -> tuple[list[str], str]:
    """-march=native where wanted, with a description of this CPU for the cache key."""
    if os.environ.get("SPEECHFM_NATIVE_ARCH", "1") in ("", "0"):
        return [], ""
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return [], ""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                cpu = line
                break
    flag = "-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native"
    return [flag], cpu


def _build_key(src: Path, with_cuda: bool, cflags: list[str], cuda_flags: list[str],
               cpu_desc: str) -> str:
    import torch

    h = hashlib.sha256()
    for name in (*_SOURCES_CPU, *_HEADERS, *(_SOURCES_CUDA if with_cuda else ())):
        h.update(name.encode())
        h.update((src / name).read_bytes())
    arch = ""
    if with_cuda:
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "") or ",".join(
            "{}.{}".format(*torch.cuda.get_device_capability(i))
            for i in range(torch.cuda.device_count())
        )
    for part in (torch.__version__, str(torch.version.cuda), sys.version, platform.machine(),
                 " ".join(cflags), " ".join(cuda_flags), cpu_desc, arch):
        h.update(part.encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes building the same library."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_with_setuptools(name: str, sources: list[str], include_dirs: list[str],
                           build_dir: Path, with_cuda: bool, cflags: list[str],
                           cuda_flags: list[str], verbose: bool) -> Path:
    """Compiles with setuptools (no ninja needed), using PyTorch's extension flags."""
    from setuptools import Distribution
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    make = CUDAExtension if with_cuda else CppExtension
    args = {"cxx": cflags, "nvcc": cuda_flags} if with_cuda else {"cxx": cflags}
    ext = make(name=name, sources=sources, include_dirs=include_dirs, extra_compile_args=args)
    dist = Distribution({"name": name, "ext_modules": [ext],
                         "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=False)}})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(build_dir)
    cmd.build_temp = str(build_dir / "objects")
    cmd.verbose = verbose
    cmd.ensure_finalized()
    quiet = contextlib.nullcontext() if verbose else _silenced()
    with quiet:
        cmd.run()
    return Path(cmd.get_ext_fullpath(name))


@contextlib.contextmanager
def _silenced():
    """Hides setuptools' progress lines (the compiler's own diagnostics still print)."""
    import logging

    logger = logging.getLogger("setuptools")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def load_rnnt_extension() -> RNNTExtension:
    """Builds (once per machine and source version) and loads the RNN-T kernels.

    Raises:
        KernelBuildError: the sources are missing, no C++ compiler is available, or the
            build failed (the compiler's diagnostics are in the message with ninja, and
            printed just before it without).
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        _loaded = _load()
        return _loaded


def _check_compiler() -> None:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise KernelBuildError(
            f"no C++ compiler found (looked for {cxx!r} on PATH): speechfm builds its RNN-T "
            "kernels on first use; install one (e.g. `apt-get install g++`) or pass "
            "backend='torch' for the pure-PyTorch implementation"
        )


def compile_library(name: str, sources: list[str], include_dirs: list[str], cflags: list[str],
                    cuda_flags: list[str], with_cuda: bool) -> Path:
    """Compiles ``sources`` into ``<cache>/extensions/<name>/<name>.so`` unless it exists.

    ``name`` must change whenever the sources or flags do (callers put a hash in it).
    Processes building the same name wait for each other. Does not load the library.
    """
    _check_compiler()
    build_dir = cache_dir() / "extensions" / name
    library = build_dir / f"{name}.so"
    verbose = os.environ.get("SPEECHFM_VERBOSE_BUILD", "0") not in ("", "0")
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelBuildError(f"cannot create the kernel build directory {build_dir}: {e}") from e
    with _file_lock(build_dir / ".lock"):
        if library.is_file():
            return library
        try:
            from torch.utils.cpp_extension import is_ninja_available, load

            if is_ninja_available():
                # Builds (and loads: loading the same library again later is harmless).
                load(name=name, sources=sources, extra_cflags=cflags,
                     extra_cuda_cflags=cuda_flags, extra_include_paths=include_dirs,
                     build_directory=str(build_dir), with_cuda=with_cuda,
                     is_python_module=False, verbose=verbose)
            else:
                built = _build_with_setuptools(name, sources, include_dirs, build_dir, with_cuda,
                                               cflags, cuda_flags, verbose)
                shutil.move(str(built), str(library))
        except Exception as e:  # noqa: BLE001 - any build failure becomes one clear error
            raise KernelBuildError(f"building {name} in {build_dir} failed: {e}") from e
    if not library.is_file():
        raise KernelBuildError(f"building {name} produced no library at {library}")
    return library


def load_library(library: Path) -> None:
    """Loads a kernel library (registers its operators with torch.ops)."""
    import torch

    try:
        torch.ops.load_library(str(library))
    except Exception as e:  # noqa: BLE001
        raise KernelBuildError(f"loading the kernel library {library} failed: {e}") from e


def _load() -> RNNTExtension:
    src = kernel_source_dir()
    missing = [n for n in (*_SOURCES_CPU, *_HEADERS) if not (src / n).is_file()]
    if missing:
        raise KernelBuildError(
            f"the RNN-T kernel sources are not at {src} (missing {', '.join(missing)}); use "
            "speechfm from a source checkout (pip install -e .), set SPEECHFM_KERNEL_SRC, or "
            "pass backend='torch' for the pure-PyTorch implementation"
        )
    _check_compiler()
    with_cuda = _cuda_wanted() and all((src / n).is_file() for n in _SOURCES_CUDA)
    cuda_error = None
    if with_cuda:
        try:
            return _compile_and_load(src, with_cuda=True)
        except KernelBuildError as e:
            # Keep the CPU kernels (CUDA tensors then use the pure-PyTorch implementation).
            cuda_error = str(e)
            warnings.warn(f"building the CUDA RNN-T kernels failed, building the CPU ones only: "
                          f"{e}", RuntimeWarning, stacklevel=3)
    ext = _compile_and_load(src, with_cuda=False)
    return RNNTExtension(path=ext.path, with_cuda=False, cuda_error=cuda_error)


def _compile_and_load(src: Path, with_cuda: bool) -> RNNTExtension:
    native, cpu_desc = _native_arch_flags()
    # -fopenmp-simd honours the kernels' `omp simd` vectorisation hints; it needs no
    # OpenMP runtime (threads come from PyTorch's pool, see cuda/rnnt/cpu_parallel.h).
    simd = ["-fopenmp-simd"] if sys.platform != "win32" else []
    cflags = ["-O3", "-DNDEBUG", *native, *simd] + (["-DSPEECHFM_WITH_CUDA"] if with_cuda else [])
    cuda_flags = ["-O3", "-DNDEBUG", "-lineinfo", "-DSPEECHFM_WITH_CUDA"] if with_cuda else []
    key = _build_key(src, with_cuda, cflags, cuda_flags, cpu_desc)
    name = f"speechfm_rnnt_{'cuda' if with_cuda else 'cpu'}_{key}"
    sources = [str(src / n) for n in (*_SOURCES_CPU, *(_SOURCES_CUDA if with_cuda else ()))]
    library = compile_library(name, sources, [str(src)], cflags, cuda_flags, with_cuda)
    load_library(library)
    return RNNTExtension(path=library, with_cuda=with_cuda)
