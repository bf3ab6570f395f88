"""The operator knows the builder image's exact backend versions: its pins, in one place each.

Build keys include the backend's exact version, so the operator (no TensorRT in its image)
must use the versions the builder image holds. Those are pinned in builder-image/Dockerfile
(ONNX Runtime) and pyproject's builder extra (TensorRT-RTX); the runtime image pins the same
ONNX Runtime (it loads only engines of its installed version); `BUILDER_IMAGE_BACKEND_VERSIONS`
repeats them for the operator, and the chart passes nothing by default, so a default
install uses exactly these.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from modelengine.operator.config import BUILDER_IMAGE_BACKEND_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = {"tensorrt-rtx": "tensorrt-rtx-cu13", "onnxruntime": "onnxruntime"}


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)", text))


def test_every_backend_the_builder_image_holds_is_pinned_and_known_to_the_operator() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = pins("\n".join(pyproject["project"]["optional-dependencies"]["builder"]))
    pinned |= pins((ROOT / "builder-image" / "Dockerfile").read_text())
    for backend, dist in DISTRIBUTION.items():
        assert dist in pinned, f"builder image does not pin {dist} exactly"
        assert BUILDER_IMAGE_BACKEND_VERSIONS[backend] == pinned[dist], (
            f"operator/config.py says {backend} {BUILDER_IMAGE_BACKEND_VERSIONS[backend]}, "
            f"the builder image pins {dist}=={pinned[dist]}"
        )
    assert set(BUILDER_IMAGE_BACKEND_VERSIONS) == set(DISTRIBUTION)


def test_the_runtime_image_loads_what_the_builder_image_builds() -> None:
    runtime = pins((ROOT / "runtime-image" / "Dockerfile").read_text())
    assert runtime.get("onnxruntime") == BUILDER_IMAGE_BACKEND_VERSIONS["onnxruntime"]


def test_a_default_install_passes_no_versions_of_its_own() -> None:
    values = yaml.safe_load((ROOT / "helm" / "modelengine" / "values.yaml").read_text())
    assert values["operator"]["backendVersions"] == {}
    assert "MODELENGINE_BACKEND_VERSIONS" not in (ROOT / "operator" / "Dockerfile").read_text()
