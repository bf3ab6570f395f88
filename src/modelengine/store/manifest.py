"""Manifests and release records: the JSON documents the store's readers rely on.

`EngineManifest` (`engines/<build-key>/manifest.json`) describes one published engine; its
presence means the engine beside it is complete, because it is written last. It names
the sha256 of the exact bytes it publishes, so when two builders race on one key the
reader can always tell which engine file the manifest belongs to.

`ReleaseRecord` (`releases/<namespace>/<name>.json`) is what the runtime sidecar reads:
the engines of one ModelEngine, one per target, written by the operator (or the local
CLI) once every target is Ready. Changing it is how a new engine reaches running pods.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SCHEMA = 1
RELEASE_SCHEMA = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TensorInfo(_Doc):
    """One engine input or output; for inputs `min/opt/max` give the profile (static: equal)."""

    name: str
    dtype: str  # numpy dtype name: float32, float16, int64, ...
    shape: list[int]  # -1 for dynamic dimensions
    min: list[int] | None = None
    opt: list[int] | None = None
    max: list[int] | None = None


class ValidationFigures(_Doc):
    """Engine vs ONNX reference on the validation samples."""

    samples: int
    max_abs_error: float
    max_rel_error: float
    rtol: float
    atol: float
    passed: bool
    ran: bool = True  # False where the backend cannot execute here (no GPU): build-only check
    note: str | None = None


class EngineTarget(_Doc):
    compute_capability: str | None = None
    product: str | None = None


class EngineManifest(_Doc):
    schema_version: int = MANIFEST_SCHEMA
    build_key: str
    model_digest: str
    onnx_digest: str
    backend: str
    backend_version: str
    target: EngineTarget
    hardware_compatibility: str = "none"
    precision: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    engine_file: str  # file name beside the manifest
    sha256: str
    size: int
    validation: ValidationFigures | None = None
    build_seconds: float
    created: str  # RFC 3339 UTC
    builder: str = Field(default="", description="Who built it: host / job name.")


class ReleaseEngine(_Doc):
    target: str  # ResolvedTarget.name
    build_key: str
    backend: str
    backend_version: str
    compute_capability: str | None = None
    product: str | None = None
    hardware_compatibility: str = "none"
    uri: str  # engine file URI
    manifest_uri: str
    sha256: str
    size: int


class ReleaseRecord(_Doc):
    schema_version: int = RELEASE_SCHEMA
    namespace: str
    name: str
    generation: int = 0
    model_digest: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    engines: list[ReleaseEngine]
    updated: str
