#!/usr/bin/env bash
# The whole test suite from a fresh machine: install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -f scripts/get-helm.sh ]; then bash scripts/get-helm.sh || echo "helm unavailable: helm tests will skip"; fi
echo "== ruff"; ruff check src tests benchmarks
echo "== mypy"; mypy
echo "== pytest"; python -m pytest -q -p no:cacheprovider "$@"
