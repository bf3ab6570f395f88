#!/usr/bin/env bash
# The main job on its embedded default: build the example model's engines with the local
# pipeline into a local store, serve them, send a request, print what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec modelengine demo "$@"
