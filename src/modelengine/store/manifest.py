"""Manifests and release records: the JSON documents the store's readers rely on.

`EngineManifest` (`engines/<build-key>/manifest.json`) describes one published engine; its
presence means the engine beside it is complete, because it is written last. It names
the sha256 of the exact bytes it publishes, so when two builders race on one key the
reader can always tell which engine file the manifest belongs to.

`ReleaseRecord` (`releases/<namespace>/<name>.json`) is what the runtime sidecar reads:
the engines of one ModelEngine, one per target, written by the operator (or the local
CLI) once every target is Ready. Changing it is how a new engine reaches running pods.

Two levels of checking. Documents built in-process (by the pipeline, the operator) come
from validated inputs and are built field by field, so construction checks types only.
Documents *read from a store* are untrusted (anyone with write access to the store wrote
them): they are parsed with the `UNTRUSTED` validation context (see `store.trust`), which
turns on the checks below: hex formats for keys and digests, single safe path segments
for file names, bounded sizes and list lengths; `api.tensors.TensorInfo` bounds ranks
and dims under the same context.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# TensorInfo and the untrusted-document context are the API's (every document carries
# tensors); re-exported here, where the store's documents are.
from modelengine.api.tensors import UNTRUSTED as UNTRUSTED
from modelengine.api.tensors import TensorInfo as TensorInfo
from modelengine.api.tensors import untrusted as untrusted

MANIFEST_SCHEMA = 1
RELEASE_SCHEMA = 1

BUILD_KEY = re.compile(r"[0-9a-f]{32,64}")  # api.targets.build_key: sha256 hex, truncated to 32
DIGEST = re.compile(r"[0-9a-f]{64}")  # sha256 hex
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # one path segment, never . or ..
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")  # backend names, versions, dtypes
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
MAX_TENSORS = 256
MAX_ENGINES = 64
MAX_ENGINE_BYTES = 256 * 2**30
MAX_TEXT = 1024


def _match(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"not {what}: {value[:80]!r}")
    return value


def _bounded_text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters or holds control characters")
    return value


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


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


MAX_GOLDEN_SAMPLES = 8
MAX_GOLDEN_BYTES = 64 * 2**20  # the golden-samples file; store.golden bounds what it decodes to


class GoldenSampleInfo(_Doc):
    """One golden sample as the manifest lists it: which profile point, at which shapes."""

    label: str  # min | opt | max | static
    shapes: list[list[int]]  # per input, in the manifest's input order

    @field_validator("label")
    @classmethod
    def _label(cls, value: str, info: ValidationInfo) -> str:
        return _match(TOKEN, value, "a sample label") if untrusted(info) else value

    @field_validator("shapes")
    @classmethod
    def _shapes(cls, value: list[list[int]], info: ValidationInfo) -> list[list[int]]:
        if untrusted(info) and (
            len(value) > MAX_TENSORS or any(len(s) > 16 or any(not 0 <= d < 2**31 for d in s) for s in value)
        ):
            raise ValueError("shapes out of range (at most 256 inputs of rank <= 16, dims in [0, 2^31))")
        return value


class GoldenSamples(_Doc):
    """The engine's acceptance test: inputs with their ONNX reference outputs (`store.golden`
    holds the file format), checked by the runtime before it reports ready."""

    file: str  # file name beside the manifest: golden.<sha12>.npz
    sha256: str
    size: int
    rtol: float
    atol: float
    samples: list[GoldenSampleInfo]
    note: str | None = None  # what was left out (a profile point over the size cap)

    @field_validator("file")
    @classmethod
    def _file(cls, value: str, info: ValidationInfo) -> str:
        return _match(SAFE_SEGMENT, value, "a single file name") if untrusted(info) else value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str, info: ValidationInfo) -> str:
        return _match(DIGEST, value, "a sha256 (64 hex digits)") if untrusted(info) else value

    @field_validator("size")
    @classmethod
    def _size(cls, value: int, info: ValidationInfo) -> int:
        if untrusted(info) and not 0 < value <= MAX_GOLDEN_BYTES:
            raise ValueError(f"size {value} is out of range [1, {MAX_GOLDEN_BYTES}]")
        return value

    @field_validator("rtol", "atol")
    @classmethod
    def _tolerance(cls, value: float, info: ValidationInfo) -> float:
        if untrusted(info) and not (math.isfinite(value) and value >= 0):
            raise ValueError("must be a finite, non-negative number")
        return value

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: list[GoldenSampleInfo], info: ValidationInfo) -> list[GoldenSampleInfo]:
        if untrusted(info) and not 0 < len(value) <= MAX_GOLDEN_SAMPLES:
            raise ValueError(f"{len(value)} samples: expected 1 to {MAX_GOLDEN_SAMPLES}")
        return value

    @field_validator("note")
    @classmethod
    def _note(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _bounded_text(value, "note") if untrusted(info) and value is not None else value


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
    golden: GoldenSamples | None = None  # absent in engines built before acceptance at load
    build_seconds: float
    created: str  # RFC 3339 UTC
    builder: str = Field(default="", description="Who built it: host / job name.")

    @field_validator("build_key")
    @classmethod
    def _build_key(cls, value: str, info: ValidationInfo) -> str:
        return _match(BUILD_KEY, value, "a build key (32 to 64 hex digits)") if untrusted(info) else value

    @field_validator("model_digest", "onnx_digest", "sha256")
    @classmethod
    def _digest(cls, value: str, info: ValidationInfo) -> str:
        return _match(DIGEST, value, "a sha256 (64 hex digits)") if untrusted(info) else value

    @field_validator("backend", "backend_version", "precision", "hardware_compatibility")
    @classmethod
    def _token(cls, value: str, info: ValidationInfo) -> str:
        return _match(TOKEN, value, "a name or version") if untrusted(info) else value

    @field_validator("engine_file")
    @classmethod
    def _engine_file(cls, value: str, info: ValidationInfo) -> str:
        return _match(SAFE_SEGMENT, value, "a single file name") if untrusted(info) else value

    @field_validator("size")
    @classmethod
    def _size(cls, value: int, info: ValidationInfo) -> int:
        if untrusted(info) and not 0 < value <= MAX_ENGINE_BYTES:
            raise ValueError(f"size {value} is out of range [1, {MAX_ENGINE_BYTES}]")
        return value

    @field_validator("inputs", "outputs")
    @classmethod
    def _tensors(cls, value: list[TensorInfo], info: ValidationInfo) -> list[TensorInfo]:
        if untrusted(info) and not 0 < len(value) <= MAX_TENSORS:
            raise ValueError(f"{len(value)} tensors: expected 1 to {MAX_TENSORS}")
        return value

    @field_validator("build_seconds")
    @classmethod
    def _seconds(cls, value: float, info: ValidationInfo) -> float:
        if untrusted(info) and not (math.isfinite(value) and value >= 0):
            raise ValueError("must be a finite, non-negative number")
        return value

    @field_validator("created", "builder")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return _bounded_text(value, "text") if untrusted(info) else value


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

    @field_validator("build_key")
    @classmethod
    def _build_key(cls, value: str, info: ValidationInfo) -> str:
        return _match(BUILD_KEY, value, "a build key (32 to 64 hex digits)") if untrusted(info) else value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str, info: ValidationInfo) -> str:
        return _match(DIGEST, value, "a sha256 (64 hex digits)") if untrusted(info) else value

    @field_validator("backend", "backend_version", "hardware_compatibility")
    @classmethod
    def _token(cls, value: str, info: ValidationInfo) -> str:
        return _match(TOKEN, value, "a name or version") if untrusted(info) else value

    @field_validator("target", "uri", "manifest_uri")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return _bounded_text(value, "text") if untrusted(info) else value

    @field_validator("size")
    @classmethod
    def _size(cls, value: int, info: ValidationInfo) -> int:
        if untrusted(info) and not 0 < value <= MAX_ENGINE_BYTES:
            raise ValueError(f"size {value} is out of range [1, {MAX_ENGINE_BYTES}]")
        return value


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

    @field_validator("namespace", "name")
    @classmethod
    def _k8s_name(cls, value: str, info: ValidationInfo) -> str:
        return _match(K8S_NAME, value, "a Kubernetes name") if untrusted(info) else value

    @field_validator("model_digest")
    @classmethod
    def _digest(cls, value: str, info: ValidationInfo) -> str:
        return _match(DIGEST, value, "a sha256 (64 hex digits)") if untrusted(info) else value

    @field_validator("inputs", "outputs")
    @classmethod
    def _tensors(cls, value: list[TensorInfo], info: ValidationInfo) -> list[TensorInfo]:
        if untrusted(info) and not 0 < len(value) <= MAX_TENSORS:
            raise ValueError(f"{len(value)} tensors: expected 1 to {MAX_TENSORS}")
        return value

    @field_validator("engines")
    @classmethod
    def _engines(cls, value: list[ReleaseEngine], info: ValidationInfo) -> list[ReleaseEngine]:
        if untrusted(info) and not 0 < len(value) <= MAX_ENGINES:
            raise ValueError(f"{len(value)} engines: expected 1 to {MAX_ENGINES}")
        return value

    @field_validator("generation")
    @classmethod
    def _generation(cls, value: int, info: ValidationInfo) -> int:
        if untrusted(info) and not 0 <= value < 2**63:
            raise ValueError("must be a non-negative 64-bit integer")
        return value

    @field_validator("updated")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return _bounded_text(value, "text") if untrusted(info) else value
