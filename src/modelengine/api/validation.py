"""Loading and semantic validation of a ModelEngine: one clear line per problem.

Pydantic's own messages are reshaped into `spec.export.inputs[0].min: ...` lines so a user
sees the field path they wrote, not pydantic's internals. The cross-field rules here are
the ones the CRD also carries as CEL (see `crd.py`); keep the two in step.

Two readers, two sets of rules for where the model lives. `modelengine build -f` runs on
the user's machine and accepts relative paths (resolved against the YAML's folder). A
cluster's pods can read only `s3://` URIs or absolute paths inside a custom builder image:
`cluster_source_problems` holds those rules, the CRD refuses the same at admission, and
the operator calls it too.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelengine.api.models import (
    BackendName,
    DType,
    ExportMethod,
    ModelEngine,
    ModelEngineSpec,
    ModelFormat,
    Precision,
    Target,
)
from modelengine.errors import InputError

# Compute capabilities TensorRT-RTX can build for (checked against tensorrt-rtx 1.7).
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")

# What each backend can do with each precision. TRT-RTX is strongly typed: precision
# comes from the ONNX graph's types, and only the float conversions are done for the user.
SUPPORTED_PRECISIONS: dict[BackendName, frozenset[Precision]] = {
    BackendName.TENSORRT: frozenset(Precision),
    BackendName.TENSORRT_RTX: frozenset({Precision.FP32, Precision.FP16}),
    BackendName.ONNXRUNTIME: frozenset({Precision.FP32}),
}


# What a pod can read: an S3 object or folder prefix, or an absolute path in its image.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]*/[^/]"
IMAGE_PATH_PATTERN = r"^file:///[^/]"
CLUSTER_SOURCE_MESSAGE = (
    "a cluster reads s3://bucket/key, s3://bucket/prefix/ or file:///abs/path with spec.build.image;"
    " upload a local model with `modelengine push -f FILE --store s3://BUCKET/PREFIX`"
)


# Limits on the work a spec can ask for, derived from one memory budget. Verification holds
# `verify.samples` random inputs at once, each possibly at the profile's max shape, and runs
# PyTorch and ONNX Runtime on them; engine validation and the runtime's warm-up do the same
# at smaller counts. Activations usually take several times the input's size, so the
# inputs verification holds are capped at a quarter of the budget. A spec over a limit is
# refused at validation, naming the field, instead of being killed by the kernel mid-build.
MEMORY_BUDGET_BYTES = 8 * 2**30
VERIFY_INPUT_BYTES = MEMORY_BUDGET_BYTES // 4
MAX_DIM = 2**31 - 1  # TensorRT's and ONNX Runtime's dimension type is int32 in places
DTYPE_BYTES = {
    DType.FLOAT32: 4,
    DType.FLOAT16: 2,
    DType.BFLOAT16: 2,
    DType.INT64: 8,
    DType.INT32: 4,
    DType.INT8: 1,
    DType.UINT8: 1,
    DType.BOOL: 1,
}


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def limit_problems(spec: ModelEngineSpec) -> list[str]:
    """Shapes and sample counts whose verification would not fit the memory budget."""
    problems: list[str] = []
    per_sample = 0
    for i, tensor in enumerate(spec.export.inputs):
        where = f"spec.export.inputs[{i}]"
        too_big = [
            f"{where}.{label}: {dims} has a dimension over {MAX_DIM}"
            for label in ("shape", "min", "opt", "max")
            if (dims := getattr(tensor, label)) and any(d > MAX_DIM for d in dims)
        ]
        problems.extend(too_big)
        _, _, largest = tensor.profile()
        if too_big:
            continue
        if any(d < 1 for d in largest):
            continue  # reported by semantic_problems
        size = math.prod(largest) * DTYPE_BYTES[tensor.dtype]
        if size > VERIFY_INPUT_BYTES:
            field = "max" if tensor.is_dynamic else "shape"
            problems.append(
                f"{where}.{field}: {largest} needs {_gib(size)} of {tensor.dtype.value} per sample, over the "
                f"{_gib(VERIFY_INPUT_BYTES)} verification may hold (memory budget {_gib(MEMORY_BUDGET_BYTES)})"
            )
        per_sample += size
    samples = spec.export.verify.samples
    if not problems and per_sample * samples > VERIFY_INPUT_BYTES:
        problems.append(
            f"spec.export.verify.samples: {samples} samples of the inputs at their max shapes need "
            f"{_gib(per_sample * samples)}, over the {_gib(VERIFY_INPUT_BYTES)} verification may hold "
            f"(at most {max(1, VERIFY_INPUT_BYTES // per_sample)} samples, or lower the max shapes)"
        )
    return problems


class SpecError(InputError):
    """A ModelEngine that cannot be built; `problems` holds one line per problem (exit 2)."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "enum":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"must be one of {expected}"
        problems.append(f"{_path(loc)}: {msg}")
    return problems


def effective_backend(spec: ModelEngineSpec, target: Target) -> BackendName:
    if target.backend is not None:
        return target.backend
    if target.cpu:
        return BackendName.ONNXRUNTIME
    return spec.build.backend


def semantic_problems(spec: ModelEngineSpec) -> list[str]:
    """Cross-field rules pydantic's field types cannot express."""
    problems: list[str] = []
    model = spec.model
    if model.format is ModelFormat.PYTHON and not model.entrypoint:
        problems.append("spec.model.entrypoint: required when format is python (module:factory)")
    if model.format is not ModelFormat.PYTHON and (model.entrypoint or model.weights):
        problems.append("spec.model.entrypoint/weights: only allowed when format is python")
    method = spec.export.method
    if method is ExportMethod.MIXED:
        if model.format is not ModelFormat.PYTHON:
            problems.append("spec.export.method: mixed needs format python (the source code)")
        if not spec.export.script_modules:
            problems.append("spec.export.scriptModules: mixed needs at least one sub-module")
    if model.format is ModelFormat.EXPORTED_PROGRAM and method is not ExportMethod.DYNAMO:
        problems.append("spec.export.method: an exported-program model exports only with dynamo")

    for i, tensor in enumerate(spec.export.inputs):
        where = f"spec.export.inputs[{i}]"
        bounds = {"min": tensor.min, "opt": tensor.opt, "max": tensor.max}
        if any(d < -1 or d == 0 for d in tensor.shape):
            problems.append(f"{where}.shape: dimensions are positive or -1, got {tensor.shape}")
        if not tensor.is_dynamic:
            for label, dims in bounds.items():
                if dims is not None and dims != tensor.shape:
                    problems.append(f"{where}.{label}: {dims} differs from static shape {tensor.shape}")
            continue
        missing = [label for label, dims in bounds.items() if dims is None]
        if missing:
            problems.append(f"{where}: dynamic shape {tensor.shape} needs {'/'.join(missing)}")
            continue
        for label, dims in bounds.items():
            assert dims is not None
            if len(dims) != len(tensor.shape):
                problems.append(
                    f"{where}.{label}: rank {len(dims)} differs from shape rank {len(tensor.shape)}"
                )
        if problems and problems[-1].startswith(where):
            continue
        lo, mid, hi = (bounds["min"], bounds["opt"], bounds["max"])
        assert lo is not None and mid is not None and hi is not None
        for d, (dim, a, b, c) in enumerate(zip(tensor.shape, lo, mid, hi, strict=True)):
            if dim == -1:
                if a < 1:
                    problems.append(f"{where}.min[{d}]: must be >= 1, got {a}")
                if not a <= b <= c:
                    problems.append(f"{where}: dimension {d} needs min <= opt <= max, got {a}/{b}/{c}")
            elif not a == b == c == dim:
                problems.append(f"{where}: static dimension {d} is {dim}, got min/opt/max {a}/{b}/{c}")
    names = [t.name for t in spec.export.inputs]
    if len(set(names)) != len(names):
        problems.append("spec.export.inputs: input names must be unique")
    if not any(p.startswith("spec.export.inputs") for p in problems):
        problems.extend(limit_problems(spec))

    precision = spec.build.precision
    for i, target in enumerate(spec.targets):
        where = f"spec.targets[{i}]"
        chosen = [
            k
            for k, v in (
                ("computeCapability", target.compute_capability),
                ("product", target.product),
                ("auto", target.auto),
                ("cpu", target.cpu),
            )
            if v
        ]
        if len(chosen) != 1:
            problems.append(f"{where}: set exactly one of computeCapability, product, auto, cpu")
            continue
        backend = effective_backend(spec, target)
        if target.cpu and backend is not BackendName.ONNXRUNTIME:
            problems.append(f"{where}: a cpu target builds with onnxruntime, not {backend.value}")
        if backend is BackendName.ONNXRUNTIME and not target.cpu:
            problems.append(f"{where}: onnxruntime engines are CPU engines: use `cpu: true`")
        if (
            backend is BackendName.TENSORRT_RTX
            and target.compute_capability
            and target.compute_capability not in RTX_COMPUTE_CAPABILITIES
        ):
            problems.append(
                f"{where}.computeCapability: tensorrt-rtx cannot target {target.compute_capability}"
                f" (supported: {', '.join(RTX_COMPUTE_CAPABILITIES)})"
            )
        if precision not in SUPPORTED_PRECISIONS[backend] and backend is not BackendName.ONNXRUNTIME:
            allowed = ", ".join(sorted(p.value for p in SUPPORTED_PRECISIONS[backend]))
            problems.append(
                f"spec.build.precision: {backend.value} cannot build {precision.value} (supported: {allowed})"
            )
    if (
        precision is Precision.INT8
        and spec.build.backend is BackendName.TENSORRT
        and not spec.build.calibration
    ):
        problems.append("spec.build.calibration: int8 with tensorrt needs a calibration dataset")
    if spec.serving and spec.serving.min_replicas > spec.serving.max_replicas:
        problems.append("spec.serving: minReplicas must be <= maxReplicas")
    return list(dict.fromkeys(problems))


def cluster_source_problems(spec: ModelEngineSpec) -> list[str]:
    """Sources a builder pod cannot read (relative paths, other schemes, `file://` outside
    a custom image): one line each, naming `modelengine push`. Not for the local CLI."""
    read_by_pods = {
        "spec.model.source": spec.model.source,
        "spec.model.weights": spec.model.weights,
        "spec.build.calibration": spec.build.calibration,
    }
    problems = []
    for field, uri in read_by_pods.items():
        if not uri:
            continue
        in_image = re.match(IMAGE_PATH_PATTERN, uri) is not None and bool(spec.build.image)
        if not (re.match(S3_URI_PATTERN, uri) or in_image):
            problems.append(f"{field}: {CLUSTER_SOURCE_MESSAGE}")
    return problems


def parse_modelengine(doc: Any, *, source: str | None = None) -> ModelEngine:
    """Validate a decoded document; raise SpecError listing every problem."""
    if not isinstance(doc, dict):
        raise SpecError(["document is not a mapping (expected a ModelEngine object)"], source=source)
    try:
        me = ModelEngine.model_validate(doc)
    except ValidationError as err:
        raise SpecError(_pydantic_problems(err), source=source) from None
    problems = semantic_problems(me.spec)
    if problems:
        raise SpecError(problems, source=source)
    return me


def load_modelengine(path: str | Path) -> ModelEngine:
    """Read a ModelEngine YAML file; relative model paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise SpecError([f"cannot read file: {err.strerror}"], source=str(p)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError([f"not valid YAML{line}"], source=str(p)) from None
    kinds = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelEngine"]
    if len(kinds) != 1:
        raise SpecError([f"expected exactly one ModelEngine document, found {len(kinds)}"], source=str(p))
    me = parse_modelengine(kinds[0], source=str(p))
    return resolve_relative_paths(me, p.parent)


def resolve_relative_paths(me: ModelEngine, base: Path) -> ModelEngine:
    """Make a relative model/weights/calibration path absolute (file://) against `base`."""

    def fix(uri: str | None) -> str | None:
        if uri is None or "://" in uri:
            return uri
        return (base / uri).resolve().as_uri()

    spec = me.spec
    model = spec.model.model_copy(
        update={"source": fix(spec.model.source), "weights": fix(spec.model.weights)}
    )
    build = spec.build.model_copy(update={"calibration": fix(spec.build.calibration)})
    storage = spec.storage
    if "://" not in storage.uri:
        storage = storage.model_copy(update={"uri": (base / storage.uri).resolve().as_uri()})
    new_spec = spec.model_copy(update={"model": model, "build": build, "storage": storage})
    return me.model_copy(update={"spec": new_spec})
