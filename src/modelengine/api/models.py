"""The ModelEngine resource: spec and status, the single source of truth.

Design: these pydantic models are what a user writes (YAML, camelCase on the wire),
what `modelengine build -f` reads, what the CRD schema is generated from
(`modelengine crd`), and what the operator writes back as status. Every other package
imports from here and this package imports nothing of the project: it is the leaf.

Validation is split in two places on purpose. Field-level rules (enums, bounds) live in
the types, so they become the CRD's structural schema. Cross-field rules (min <= opt <=
max, int8 needs calibration data, backend/precision pairs) live in `validate_spec` in
`validation.py` and are mirrored as CEL rules in the CRD where CEL can express them; the
Python side reports every problem as one line naming the field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "modelengine.io"
API_VERSION = "v1alpha1"
KIND = "ModelEngine"
PLURAL = "modelengines"
SHORT_NAME = "me"
SOURCE_URI_MAX = 2048  # bounds the CEL cost of the source rules


class _Model(BaseModel):
    """Base: camelCase aliases on the wire, snake_case in Python, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ModelFormat(StrEnum):
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "exported-program"
    ONNX = "onnx"
    PYTHON = "python"


class ExportMethod(StrEnum):
    TRACE = "trace"
    SCRIPT = "script"
    MIXED = "mixed"
    DYNAMO = "dynamo"


class BackendName(StrEnum):
    TENSORRT = "tensorrt"
    TENSORRT_RTX = "tensorrt-rtx"
    ONNXRUNTIME = "onnxruntime"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"


class DType(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT64 = "int64"
    INT32 = "int32"
    INT8 = "int8"
    UINT8 = "uint8"
    BOOL = "bool"


class ControlFlowPolicy(StrEnum):
    """What to do with a branch frozen by tracing when no input flips it."""

    WARN = "warn"
    STRICT = "strict"


class RetentionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class ModelSource(_Model):
    source: str = Field(
        description=(
            "Where the model lives. In a cluster: s3://bucket/key (a file), s3://bucket/prefix/"
            " (a folder: code + weights) or file:///abs/path inside spec.build.image; `modelengine"
            " push` uploads a local model and rewrites this. The local CLI also takes relative paths."
        ),
        min_length=1,
        max_length=SOURCE_URI_MAX,
    )
    format: ModelFormat = Field(description="How the file at `source` is read.")
    entrypoint: str | None = Field(
        default=None,
        description="For format=python: `module:factory` returning an nn.Module.",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
    )
    weights: str | None = Field(
        default=None,
        description="For format=python: optional .safetensors or state_dict (.pt, weights_only).",
        max_length=SOURCE_URI_MAX,
    )


class TensorSpec(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][\w.:/-]*$")
    dtype: DType = DType.FLOAT32
    shape: list[int] = Field(
        description="Dimensions; -1 marks a dynamic dimension bounded by min/opt/max.",
        min_length=1,
        max_length=8,
    )
    min: list[int] | None = Field(default=None, description="Smallest shape (dynamic dims).")
    opt: list[int] | None = Field(default=None, description="Shape the engine is tuned for.")
    max: list[int] | None = Field(default=None, description="Largest shape (dynamic dims).")

    @property
    def is_dynamic(self) -> bool:
        return any(d == -1 for d in self.shape)

    def profile(self) -> tuple[list[int], list[int], list[int]]:
        """(min, opt, max) with static dims filled in; valid only after validation."""
        if not self.is_dynamic:
            return list(self.shape), list(self.shape), list(self.shape)
        assert self.min is not None and self.opt is not None and self.max is not None
        return list(self.min), list(self.opt), list(self.max)


class VerifySpec(_Model):
    samples: int = Field(default=8, ge=1, le=1024, description="Random inputs compared.")
    rtol: float = Field(default=1e-3, ge=0)
    atol: float = Field(default=1e-4, ge=0)
    control_flow: ControlFlowPolicy = Field(
        default=ControlFlowPolicy.WARN,
        description="warn: a frozen branch no input flips is a warning; strict: a failure.",
    )


class ExportSpec(_Model):
    method: ExportMethod = ExportMethod.TRACE
    opset: int = Field(default=18, ge=13, le=23)
    inputs: list[TensorSpec] = Field(min_length=1, max_length=32)
    outputs: list[str] = Field(default_factory=lambda: ["output"], min_length=1, max_length=32)
    script_modules: list[str] = Field(
        default_factory=list,
        description="For method=mixed: dotted attribute paths of sub-modules to script.",
    )
    verify: VerifySpec = Field(default_factory=VerifySpec)


class BuildSpec(_Model):
    backend: BackendName = BackendName.TENSORRT_RTX
    precision: Precision = Precision.FP32
    calibration: str | None = Field(
        default=None,
        description="Dataset URI (.npz of input arrays) for int8 calibration.",
        max_length=SOURCE_URI_MAX,
    )
    workspace_mi_b: int = Field(default=1024, ge=16, le=1 << 20, alias="workspaceMiB")
    optimization_level: int = Field(default=3, ge=0, le=5)
    image: str | None = Field(default=None, description="Override the builder image.")
    hardware_compatibility: str = Field(
        default="none",
        pattern=r"^(none|ampere-plus|same-compute-capability)$",
        description="TensorRT hardware-compatibility level of the engine.",
    )


class Target(_Model):
    """One build target. Exactly one of computeCapability, product, auto or cpu."""

    compute_capability: str | None = Field(default=None, pattern=r"^\d{1,2}\.\d$")
    product: str | None = Field(default=None, min_length=1)
    auto: bool | None = Field(default=None, description="Every distinct GPU kind among the cluster's Nodes.")
    cpu: bool | None = Field(default=None, description="A CPU engine (onnxruntime backend).")
    backend: BackendName | None = Field(default=None, description="Override build.backend.")


class SecretRef(_Model):
    name: str = Field(min_length=1)


class StorageSpec(_Model):
    uri: str = Field(min_length=1, description="file:///path or s3://bucket/prefix")
    secret_ref: SecretRef | None = None
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, moto).")
    region: str | None = None


class BatchingSpec(_Model):
    enabled: bool = True
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_delay_ms: float = Field(default=2.0, ge=0, le=1000)


class AutoscalingSpec(_Model):
    metric: str = Field(default="cpu", pattern=r"^(cpu|inflight|rps)$")
    target: int = Field(default=70, ge=1)


class ResourcesSpec(_Model):
    """The runtime container's CPU and memory (requests = limits for memory)."""

    cpu: str | None = Field(default=None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str | None = Field(default=None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")


class ServingGroupSpec(_Model):
    """Overrides for the serving group of one GPU product (or `cpu`); unset fields inherit."""

    product: str = Field(min_length=1, max_length=253)
    min_replicas: int | None = Field(default=None, ge=0, le=1000)
    max_replicas: int | None = Field(default=None, ge=1, le=1000)
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec | None = None


class ServingSpec(_Model):
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    image: str | None = None
    cpu: bool = False  # also serve from CPU nodes (needs a `cpu: true` target's engine)
    resources: ResourcesSpec | None = None
    groups: list[ServingGroupSpec] = Field(default_factory=list, max_length=64)


class ModelEngineSpec(_Model):
    model: ModelSource
    export: ExportSpec
    build: BuildSpec = Field(default_factory=BuildSpec)
    targets: list[Target] = Field(min_length=1, max_length=64)
    storage: StorageSpec
    serving: ServingSpec | None = None
    retention_policy: RetentionPolicy = RetentionPolicy.RETAIN


class ObjectMeta(BaseModel):
    """The slice of Kubernetes metadata we read; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = "default"


class Phase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    READY = "Ready"
    PARTIALLY_READY = "PartiallyReady"
    FAILED = "Failed"


class EnginePhase(StrEnum):
    QUEUED = "Queued"
    BUILDING = "Building"
    READY = "Ready"
    FAILED = "Failed"
    ORPHANED = "Orphaned"


class EngineStatus(_Model):
    target: str
    build_key: str
    phase: EnginePhase
    backend: str
    backend_version: str | None = None
    compute_capability: str | None = None
    product: str | None = None
    uri: str | None = None
    sha256: str | None = None
    size: int | None = None
    build_seconds: float | None = None
    validation: dict[str, float] | None = None
    job_name: str | None = None
    reason: str | None = None
    cached: bool | None = None


class Condition(_Model):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class RolloutPhase(StrEnum):
    ROLLED_OUT = "RolledOut"
    PROGRESSING = "Progressing"
    STALLED = "Stalled"
    VERSION_MISMATCH = "VersionMismatch"  # the serving image cannot load this engine: not rolled out
    NO_ENGINE = "NoEngine"  # a GPU kind among the Nodes without an engine: no pods


class ServingGroupStatus(_Model):
    """One serving group: the Deployment serving one GPU kind (or the CPU nodes)."""

    group: str
    phase: RolloutPhase
    product: str | None = None
    compute_capability: str | None = None
    deployment: str | None = None
    engine: str | None = None  # the target whose engine this group serves
    replicas: int | None = None
    ready_replicas: int | None = None
    reason: str | None = None


class ModelEngineStatus(_Model):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    model_digest: str | None = None
    targets_ready: str | None = None
    engines: list[EngineStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    serving: list[ServingGroupStatus] | None = None  # with spec.serving only
    message: str | None = None


class ModelEngine(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: str = Field(alias="apiVersion", pattern=rf"^{API_GROUP}/{API_VERSION}$")
    kind: str = Field(pattern=rf"^{KIND}$")
    metadata: ObjectMeta
    spec: ModelEngineSpec
    status: ModelEngineStatus | None = None
