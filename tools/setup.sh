#!/usr/bin/env bash
# Set up (or reuse) the speechfm virtual environment.
#
#   bash tools/setup.sh [EXTRAS]      # EXTRAS: comma list of pyproject extras, default "g2p"
#
# - Makes .venv in the repository root (or uses $SPEECHFM_VENV) unless it already exists.
# - Installs torch==2.13.0 (the CPU build on a CPU machine) only when no torch imports in
#   that environment, so the "torch>=2.6" requirement is already satisfied and pip never
#   pulls CUDA wheels. Override with SPEECHFM_TORCH_SPEC (e.g. "torch==2.11.0").
# - Installs speechfm editable with the requested extras.
# - Idempotent: a stamp of (pyproject.toml, extras, python) skips pip on a second run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=${1:-g2p}
venv=${SPEECHFM_VENV:-$root/.venv}
python=${PYTHON:-python3}
torch_spec=${SPEECHFM_TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || { echo "[setup] speechfm needs Python >= 3.10" >&2; exit 1; }

stamp="$venv/.speechfm-setup"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16) extras=$extras $("$py" -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import torch, speechfm' 2>/dev/null; then
  echo "[setup] $venv is up to date (extras: $extras)"
  exit 0
fi

if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "[setup] installing $torch_spec"
  "$py" -m pip install -q "$torch_spec"
fi
echo "[setup] installing speechfm[$extras] (editable)"
"$py" -m pip install -q -e "$root[$extras]"
echo "$want" > "$stamp"
"$py" -c 'import torch, speechfm; print(f"[setup] ok: speechfm {speechfm.__version__}, torch {torch.__version__}, cuda={torch.cuda.is_available()}")'
