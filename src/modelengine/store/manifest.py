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
from collections.abc import Callable, Sized
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# TensorInfo and the untrusted-document context are the API's (every document carries
# tensors); re-exported here, where the store's documents are.
from modelengine.api.tensors import UNTRUSTED as UNTRUSTED
from modelengine.api.tensors import TensorInfo as TensorInfo
from modelengine.api.tensors import full_match, matching, when_untrusted
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
MAX_GOLDEN_SAMPLES = 8
MAX_GOLDEN_BYTES = 64 * 2**20  # the golden-samples file; store.golden bounds what it decodes to

# -- field checks ------------------------------------------------------------------------
# One definition per kind of check, as `Annotated` types the store's documents (here and in
# `store.export_record`) declare their fields with. Each check runs on untrusted documents
# only (`when_untrusted`); its message is the refusal's, after the field's name.


def bounded_text(what: str) -> AfterValidator:
    """At most `MAX_TEXT` characters, none of them a control character."""

    def check(value: str) -> None:
        if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
            raise ValueError(f"{what} is longer than {MAX_TEXT} characters or holds control characters")

    return when_untrusted(check)


def byte_size(most: int) -> AfterValidator:
    """A size in bytes, from 1 to `most`."""

    def check(value: int) -> None:
        if not 0 < value <= most:
            raise ValueError(f"size {value} is out of range [1, {most}]")

    return when_untrusted(check)


def count_of(what: str, most: int, *, least: int = 0) -> AfterValidator:
    """A list of `least` to `most` items; `what` names them in the message."""
    expected = f"expected {least} to {most}" if least else f"at most {most}"

    def check(value: Sized) -> None:
        if not least <= len(value) <= most:
            raise ValueError(f"{len(value)} {what}: {expected}")

    return when_untrusted(check)


def each(check: Callable[[str], None]) -> Callable[[list[str]], None]:
    """`check` applied to every item (the list keeps the field's place in the message)."""

    def check_all(values: list[str]) -> None:
        for value in values:
            check(value)

    return check_all


def _non_negative_finite(value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a finite, non-negative number")


def _int64(value: int) -> None:
    if not 0 <= value < 2**63:
        raise ValueError("must be a non-negative 64-bit integer")


def _sample_shapes(value: list[list[int]]) -> None:
    if len(value) > MAX_TENSORS or any(len(s) > 16 or any(not 0 <= d < 2**31 for d in s) for s in value):
        raise ValueError("shapes out of range (at most 256 inputs of rank <= 16, dims in [0, 2^31))")


is_file_name = full_match(SAFE_SEGMENT, "a single file name")

BuildKey = Annotated[str, matching(BUILD_KEY, "a build key (32 to 64 hex digits)")]
Digest = Annotated[str, matching(DIGEST, "a sha256 (64 hex digits)")]
FileName = Annotated[str, when_untrusted(is_file_name)]
Token = Annotated[str, matching(TOKEN, "a name or version")]
K8sName = Annotated[str, matching(K8S_NAME, "a Kubernetes name")]
Text = Annotated[str, bounded_text("text")]
Note = Annotated[str, bounded_text("note")]
NonNegativeFinite = Annotated[float, when_untrusted(_non_negative_finite)]
Generation = Annotated[int, when_untrusted(_int64)]
EngineSize = Annotated[int, byte_size(MAX_ENGINE_BYTES)]
Tensors = Annotated[list[TensorInfo], count_of("tensors", MAX_TENSORS, least=1)]


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


class GoldenSampleInfo(_Doc):
    """One golden sample as the manifest lists it: which profile point, at which shapes."""

    label: Annotated[str, matching(TOKEN, "a sample label")]  # min | opt | max | static
    shapes: Annotated[list[list[int]], when_untrusted(_sample_shapes)]  # per input, in input order


class GoldenSamples(_Doc):
    """The engine's acceptance test: inputs with their ONNX reference outputs (`store.golden`
    holds the file format), checked by the runtime before it reports ready."""

    file: FileName  # file name beside the manifest: golden.<sha12>.npz
    sha256: Digest
    size: Annotated[int, byte_size(MAX_GOLDEN_BYTES)]
    rtol: NonNegativeFinite
    atol: NonNegativeFinite
    samples: Annotated[list[GoldenSampleInfo], count_of("samples", MAX_GOLDEN_SAMPLES, least=1)]
    note: Note | None = None  # what was left out (a profile point over the size cap)


class EngineTarget(_Doc):
    compute_capability: str | None = None
    product: str | None = None


class EngineManifest(_Doc):
    schema_version: int = MANIFEST_SCHEMA
    build_key: BuildKey
    model_digest: Digest
    onnx_digest: Digest
    backend: Token
    backend_version: Token
    target: EngineTarget
    hardware_compatibility: Token = "none"
    precision: Token
    inputs: Tensors
    outputs: Tensors
    engine_file: FileName  # file name beside the manifest
    sha256: Digest
    size: EngineSize
    validation: ValidationFigures | None = None
    golden: GoldenSamples | None = None  # absent in engines built before acceptance at load
    build_seconds: NonNegativeFinite
    created: Text  # RFC 3339 UTC
    builder: Text = Field(default="", description="Who built it: host / job name.")


class ReleaseEngine(_Doc):
    target: Text  # ResolvedTarget.name
    build_key: BuildKey
    backend: Token
    backend_version: Token
    compute_capability: str | None = None
    product: str | None = None
    hardware_compatibility: Token = "none"
    uri: Text  # engine file URI
    manifest_uri: Text
    sha256: Digest
    size: EngineSize


class ReleaseRecord(_Doc):
    schema_version: int = RELEASE_SCHEMA
    namespace: K8sName
    name: K8sName
    generation: Generation = 0
    model_digest: Digest
    inputs: Tensors
    outputs: Tensors
    engines: Annotated[list[ReleaseEngine], count_of("engines", MAX_ENGINES, least=1)]
    updated: Text
