"""Installed backend versions, read from package metadata without importing the library.

Build keys include the backend's exact version. The operator computes keys but has no
TensorRT in its image, so it cannot ask the library; it uses versions configured for its
builder image (`--backend-version`), defaulting to what this function finds installed.
The builder's `Backend.version()` must return the same string for the same install.
"""

from __future__ import annotations

from importlib import metadata

from modelengine.api.models import BackendName

# Distribution names that provide each backend, first match wins.
DISTRIBUTIONS: dict[BackendName, tuple[str, ...]] = {
    BackendName.TENSORRT_RTX: ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx", "tensorrt_rtx"),
    BackendName.TENSORRT: (
        "tensorrt",
        "tensorrt-cu13",
        "tensorrt-cu12",
        "tensorrt-cu13-libs",
        "tensorrt-cu12-libs",
    ),
    BackendName.ONNXRUNTIME: ("onnxruntime", "onnxruntime-gpu"),
}


def installed_version(backend: BackendName) -> str | None:
    for dist in DISTRIBUTIONS[backend]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def version_compatible(backend: str, built: str, have: str) -> bool:
    """Whether a runtime with `have` can load an engine built with `built`.

    TensorRT and TRT-RTX engines carry a version tag and load only in the exact version
    that built them. An ONNX Runtime "engine" is an ONNX graph with only basic,
    standard-op optimizations applied, so any runtime of the same major version reads it
    (an IR or opset it does not know still fails at load, with ORT's own reason). Seen on
    the lent H100: its ORT 1.30 loads engines built here by 1.32. The runtime applies this
    rule when it selects an engine; the operator applies it before rolling one out.
    """
    if built == have:
        return True
    if backend == BackendName.ONNXRUNTIME.value:
        return built.split(".")[0] == have.split(".")[0]
    return False
