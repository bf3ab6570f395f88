"""The ModelEngine API: spec/status models, validation, targets and build keys (the leaf).

Beside the models: `crd` generates the CustomResourceDefinition from them and
`crd_command` is `modelengine crd`; both import nothing of the project outside `api/`.
"""

from modelengine.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SHORT_NAME,
    BackendName,
    DType,
    ExportMethod,
    ModelEngine,
    ModelEngineSpec,
    ModelFormat,
    Precision,
    TensorSpec,
)
from modelengine.api.targets import GpuKind, ResolvedTarget, build_key, export_digest, resolve_targets
from modelengine.api.validation import SpecError, load_modelengine, parse_modelengine

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "BackendName",
    "DType",
    "ExportMethod",
    "GpuKind",
    "ModelEngine",
    "ModelEngineSpec",
    "ModelFormat",
    "Precision",
    "ResolvedTarget",
    "SpecError",
    "TensorSpec",
    "build_key",
    "export_digest",
    "load_modelengine",
    "parse_modelengine",
    "resolve_targets",
]
