#!/usr/bin/env bash
# Environment for the new-language task; sourced by run.sh from this folder.
# Uses the repository's .venv when there is one (tools/setup.sh makes it); speechfm is
# installed there in editable mode, so no PYTHONPATH is needed.
__root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$__root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$__root/.venv/bin/activate"
fi
unset __root
if ! command -v speechfm >/dev/null 2>&1; then
  speechfm() { python -m speechfm "$@"; }
fi
export PYTHONUNBUFFERED=1
