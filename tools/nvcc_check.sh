#!/usr/bin/env bash
# Compile-only check of speechfm's CUDA kernels, so that a CUDA error fails CI even on a
# machine without a GPU.
#
#   bash tools/nvcc_check.sh            # uses nvcc from PATH (or $NVCC)
#
# - Compiles every cuda/rnnt/*.cu for sm_80 and sm_90 (nvcc -c, warnings are errors), and
#   the operator glue (cuda/rnnt/bindings.cpp) with -DSPEECHFM_WITH_CUDA against PyTorch's
#   headers (-fsyntax-only), all in parallel.
# - A success is cached under ${SPEECHFM_CACHE_DIR:-~/.cache/speechfm}/nvcc_check, keyed
#   by a hash of the sources, the compilers and the flags: a rerun on unchanged sources
#   returns at once, any source change recompiles.
# - Exit status: 0 ok, 1 a compile error, 2 no nvcc / no python with torch.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/cuda/rnnt"
nvcc=${NVCC:-nvcc}
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x "$root/.venv/bin/python" ]; then
  py="$root/.venv/bin/python"
else
  py=python3
fi
cxx=${CXX:-c++}

if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "[nvcc_check] $nvcc not found on PATH" >&2
  exit 2
fi
if ! torch_info=$("$py" -c 'import sys, torch, torch.utils.cpp_extension as c
print(torch.__version__)
print(" ".join(c.include_paths()))' 2>/dev/null); then
  echo "[nvcc_check] $py cannot import torch" >&2
  exit 2
fi
torch_version=$(echo "$torch_info" | sed -n 1p)
torch_includes=$(echo "$torch_info" | sed -n 2p)

archs="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90"
cu_flags="-std=c++17 -O3 -lineinfo --Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -I$src"
# The glue uses PyTorch's language level (C++20 from 2.10 on, C++17 before).
cxx_std=$("$py" -c 'import torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); print("c++20" if v >= (2, 10) else "c++17")')
abi=$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
glue_flags="-std=$cxx_std -fsyntax-only -Wall -Wextra -DSPEECHFM_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI=$abi -I$src"

key=$(
  {
    cat "$src"/*.cu "$src"/*.h "$src"/bindings.cpp
    "$nvcc" --version
    "$cxx" --version
    echo "$archs $cu_flags $glue_flags $torch_version"
  } | sha256sum | cut -c1-24
)
cache="${SPEECHFM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/speechfm}/nvcc_check"
stamp="$cache/$key.ok"
if [ -f "$stamp" ]; then
  echo "[nvcc_check] ok (cached: sources unchanged since $(cat "$stamp"))"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

inc=""
for d in $torch_includes; do inc="$inc -I$d"; done

pids=()
names=()
for f in "$src"/*.cu; do
  name=$(basename "$f" .cu)
  # shellcheck disable=SC2086
  ( "$nvcc" -c "$f" -o "$work/$name.o" $archs $cu_flags $inc >"$work/$name.log" 2>&1 ) &
  pids+=($!)
  names+=("$name.cu")
done
# shellcheck disable=SC2086
( "$cxx" $glue_flags $inc "$src/bindings.cpp" >"$work/bindings.log" 2>&1 ) &
pids+=($!)
names+=("bindings.cpp (with CUDA glue)")

status=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "[nvcc_check] ok   ${names[$i]}"
  else
    echo "[nvcc_check] FAIL ${names[$i]}"
    log="$work/$(basename "${names[$i]%% *}" | sed 's/\.cu$//; s/\.cpp$//').log"
    sed 's/^/    /' "$log"
    status=1
  fi
done
# Warnings from PyTorch's own headers are not ours; show only the glue's own ones.
if grep -q "rnnt/bindings.cpp.*warning" "$work/bindings.log" 2>/dev/null; then
  grep -A3 "rnnt/bindings.cpp.*warning" "$work/bindings.log" | sed 's/^/    /'
  status=1
fi
if [ "$status" -eq 0 ]; then
  date -u +%Y-%m-%dT%H:%M:%SZ >"$stamp"
  echo "[nvcc_check] all CUDA sources compile for sm_80 and sm_90"
fi
exit "$status"
