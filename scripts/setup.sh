#!/usr/bin/env bash
# Create .venv (Python 3.11) and install modelengine with every extra the tests need.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.modelengine-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  # torch is pinned to the CPU wheel (==2.13.0); an unpinned torch would pull a CUDA build.
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
