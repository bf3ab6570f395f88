"""A builder whose installed backend differs from the version its Job was planned with refuses.

The operator plans build keys with the builder image's versions it was told (or knows as the
published image's pins); a builder image holding another version must not publish an
engine under that key. The refusal names both versions and how to reconcile them.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from modelengine.api.models import BackendName
from modelengine.api.versions import installed_version
from tests.builder.test_cli import EXAMPLE, cli


def _env(tmp_path: Path, version: str) -> dict[str, str]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["source"] = EXAMPLE.parent.as_uri()
    doc["spec"]["storage"] = {"uri": (tmp_path / "store").as_uri()}
    return {
        "MODELENGINE_RESOURCE": json.dumps(doc),
        "MODELENGINE_TARGET": json.dumps({"backend": "onnxruntime", "computeCapability": None}),
        "MODELENGINE_BACKEND_VERSION": version,
        "MODELENGINE_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }


def test_a_different_backend_version_is_refused_naming_both(tmp_path: Path) -> None:
    installed = installed_version(BackendName.ONNXRUNTIME)
    assert installed is not None
    out = cli("builder", env=_env(tmp_path, "0.0.1"))
    assert out.returncode == 1, out.stderr
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["phase"] == "Failed"
    assert f"this builder image has onnxruntime {installed}" in summary["reason"]
    assert "planned the build for onnxruntime 0.0.1" in summary["reason"]
    assert not list((tmp_path / "store").rglob("manifest.json"))


def test_the_same_backend_version_builds(tmp_path: Path) -> None:
    installed = installed_version(BackendName.ONNXRUNTIME)
    assert installed is not None
    out = cli("builder", env=_env(tmp_path, installed))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "termination-log").read_text())["phase"] == "Ready"
