"""Installed backend versions, read from package metadata without importing the libraries.

The operator computes build keys (which include the backend's exact version) in an
image that has no TensorRT; the builder and the runtime compute the same keys with the
library loaded. Both must agree, so `Backend.version()` of every backend returns what
`installed_version` reads here: the version of the distribution that provides the
backend's top-level module (e.g. `tensorrt-rtx-cu13` 1.7.1.116 for `tensorrt_rtx`,
`tensorrt` or `tensorrt-cu12` for `tensorrt`, `onnxruntime` or `onnxruntime-gpu`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util

from modelengine.api.models import BackendName

MODULES: dict[BackendName, str] = {
    BackendName.TENSORRT: "tensorrt",
    BackendName.TENSORRT_RTX: "tensorrt_rtx",
    BackendName.ONNXRUNTIME: "onnxruntime",
}


@functools.cache
def _providers() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def installed_version(backend: BackendName | str) -> str | None:
    """Version of the distribution providing the backend's module; None when not installed."""
    module = MODULES[BackendName(backend)]
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    # Several distributions can ship files under one top-level name (a meta package and
    # its "-libs"/"-bindings" parts); the one carrying the module itself is the plain one.
    names = sorted(set(_providers().get(module, [])), key=lambda n: ("libs" in n or "bindings" in n, n))
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
