"""ModelEngine documents the CRD and the Python validator must judge alike.

Valid documents: the YAML fixtures beside this file plus every `kind: ModelEngine` YAML
under examples/, and a few edge cases. Invalid ones: a valid base with one mutation each,
labelled with the field both sides must name (`where`, a path prefix) and, where the two
can share wording, a phrase both messages contain (`says`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

Doc = dict[str, Any]


def load_documents(folder: Path) -> list[tuple[str, Doc]]:
    """(label, document) for every ModelEngine document in the YAML files under `folder`."""
    found = []
    for path in sorted(folder.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("kind") == "ModelEngine":
                found.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return found


def base() -> Doc:
    (doc,) = [d for label, d in load_documents(FIXTURES) if "python-mixed-dynamic" in label]
    return copy.deepcopy(doc)


@dataclass(frozen=True)
class Sample:
    id: str
    mutate: Callable[[Doc], None]
    where: str | None = None  # a path both sides' problems start with
    says: str | None = None  # a phrase both sides' problems contain

    def document(self) -> Doc:
        doc = base()
        self.mutate(doc)
        return doc


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(path: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


def _all(*steps: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for step in steps:
            step(doc)

    return mutate


def _onnx(doc: Doc) -> None:
    doc["spec"]["model"] = {"source": "s3://m/model.onnx", "format": "onnx"}
    doc["spec"]["export"]["method"] = "trace"
    del doc["spec"]["export"]["scriptModules"]


_INPUT = "spec.export.inputs.0"
_STATIC = {"name": "input", "shape": [1, 3, 224, 224]}

VALID_EDGES: list[Sample] = [
    Sample("fixture-base", lambda d: None),
    Sample("cpu-target-ignores-rtx-precision", _set("spec.targets", [{"cpu": True}])),
    Sample("auto-false-does-not-count", _set("spec.targets", [{"auto": False, "product": "NVIDIA-L4"}])),
    Sample("static-shape-with-equal-bounds", _set(_INPUT, {**_STATIC, "min": _STATIC["shape"]})),
    Sample(
        "no-build-section-defaults",
        _all(_drop("spec.build"), _set("spec.targets", [{"computeCapability": "7.5"}])),
    ),
    Sample("serving-scale-from-zero", _set("spec.serving", {"minReplicas": 0, "maxReplicas": 1})),
    Sample("serving-defaults", _set("spec.serving", {})),
    Sample("onnx-with-empty-weights", _all(_onnx, _set("spec.model.weights", ""))),
    Sample(
        "int8-tensorrt-with-calibration",
        _set("spec.build", {"backend": "tensorrt", "precision": "int8", "calibration": "s3://c/calib.npz"}),
    ),
    Sample("s3-folder-source", _set("spec.model.source", "s3://models/combinednet/v2/")),
    Sample(
        "file-source-in-builder-image",
        _all(
            _set("spec.model.source", "file:///opt/model/"),
            _set("spec.model.weights", "file:///opt/model/w.safetensors"),
            _set("spec.build.image", "registry.example.com/team/builder:1.0"),
        ),
    ),
    Sample(
        "tensorrt-target-override-for-h100",
        _set("spec.targets.0", {"computeCapability": "9.0", "backend": "tensorrt"}),
    ),
]

INVALID: list[Sample] = [
    # field rules (OpenAPI schema)
    Sample("unknown-backend", _set("spec.build.backend", "tensorrt-llm"), "spec.build.backend"),
    Sample("bad-precision", _set("spec.build.precision", "fp4"), "spec.build.precision"),
    Sample("bad-dtype", _set(f"{_INPUT}.dtype", "float64"), "spec.export.inputs[0].dtype"),
    Sample("bad-method", _set("spec.export.method", "onnx"), "spec.export.method"),
    Sample("negative-workspace", _set("spec.build.workspaceMiB", -1), "spec.build.workspaceMiB"),
    Sample("opset-too-new", _set("spec.export.opset", 99), "spec.export.opset"),
    Sample("zero-verify-samples", _set("spec.export.verify.samples", 0), "spec.export.verify.samples"),
    Sample("negative-rtol", _set("spec.export.verify.rtol", -0.5), "spec.export.verify.rtol"),
    Sample(
        "bad-compute-capability",
        _set("spec.targets.0.computeCapability", "sm_89"),
        "spec.targets[0].computeCapability",
    ),
    Sample("bad-entrypoint", _set("spec.model.entrypoint", "combinednet.build"), "spec.model.entrypoint"),
    Sample("bad-metric", _set("spec.serving.autoscaling.metric", "gpu"), "spec.serving.autoscaling.metric"),
    Sample("zero-max-replicas", _set("spec.serving.maxReplicas", 0), "spec.serving.maxReplicas"),
    Sample("missing-source", _drop("spec.model.source"), "spec.model.source"),
    Sample("missing-storage", _drop("spec.storage"), "spec.storage"),
    Sample("no-targets", _set("spec.targets", []), "spec.targets"),
    Sample("rank-nine", _set(f"{_INPUT}.shape", [1] * 9), "spec.export.inputs[0].shape"),
    Sample("unknown-field", _set("spec.build.flavour", "fast"), "spec.build.flavour"),
    Sample("bad-name", _set("metadata.name", "My_Model"), "metadata.name"),
    Sample("wrong-api-version", _set("apiVersion", "modelengine.io/v1")),
    # cross-field rules (CEL)
    *(
        Sample(f"source-{label}", _set("spec.model.source", value), "spec.model.source", "modelengine push")
        for label, value in (
            ("relative", "."),
            ("relative-file", "models/resnet.pt"),
            ("not-a-uri", "not a uri at all"),
            ("absolute-path", "/models/resnet.pt"),
            ("https", "https://example.com/resnet.pt"),
            ("s3-without-key", "s3://models"),
            ("s3-uppercase-bucket", "s3://Models/resnet.pt"),
            ("file-without-image", "file:///models/resnet.pt"),
            ("file-relative", "file://models/resnet.pt"),
        )
    ),
    Sample(
        "file-source-with-empty-image",
        _all(_set("spec.model.source", "file:///opt/model/"), _set("spec.build.image", "")),
        "spec.model.source",
        "modelengine push",
    ),
    Sample(
        "weights-relative",
        _set("spec.model.weights", "w.safetensors"),
        "spec.model.weights",
        "modelengine push",
    ),
    Sample(
        "calibration-relative",
        _set("spec.build", {"backend": "tensorrt", "precision": "int8", "calibration": "calib.npz"}),
        "spec.build.calibration",
        "modelengine push",
    ),
    Sample(
        "missing-entrypoint",
        _drop("spec.model.entrypoint"),
        "spec.model.entrypoint",
        "required when format is python",
    ),
    Sample(
        "weights-without-python",
        _all(_onnx, _set("spec.model.weights", "s3://m/w.safetensors")),
        "spec.model",
        "only allowed when format is python",
    ),
    Sample(
        "mixed-needs-python",
        _all(_onnx, _set("spec.export.method", "mixed"), _set("spec.export.scriptModules", ["gate"])),
        "spec.export.method",
        "mixed needs format python",
    ),
    Sample(
        "mixed-without-script-modules",
        _drop("spec.export.scriptModules"),
        "spec.export.scriptModules",
        "mixed needs at least one sub-module",
    ),
    Sample(
        "exported-program-traced",
        _all(_onnx, _set("spec.model.format", "exported-program")),
        "spec.export.method",
        "exports only with dynamo",
    ),
    Sample("dynamic-without-max", _drop(f"{_INPUT}.max"), "spec.export.inputs[0]", "dynamic shape"),
    Sample(
        "rank-mismatch",
        _set(f"{_INPUT}.min", [1, 3, 64]),
        "spec.export.inputs[0].min",
        "differs from shape rank",
    ),
    Sample(
        "min-above-max",
        _set(f"{_INPUT}.min", [64, 3, 64, 64]),
        "spec.export.inputs[0]",
        "needs min <= opt <= max",
    ),
    Sample(
        "opt-above-max",
        _set(f"{_INPUT}.opt", [8, 3, 224, 600]),
        "spec.export.inputs[0]",
        "needs min <= opt <= max",
    ),
    Sample(
        "dynamic-min-zero", _set(f"{_INPUT}.min", [0, 3, 64, 64]), "spec.export.inputs[0].min", "must be >= 1"
    ),
    Sample(
        "static-dim-bound-differs",
        _set(f"{_INPUT}.opt", [8, 4, 224, 224]),
        "spec.export.inputs[0]",
        "static dimension",
    ),
    Sample(
        "static-shape-bound-differs",
        _set(_INPUT, {**_STATIC, "max": [2, 3, 224, 224]}),
        "spec.export.inputs[0]",
        "differs from static shape",
    ),
    Sample(
        "zero-dimension",
        _set(f"{_INPUT}.shape", [-1, 0, -1, -1]),
        "spec.export.inputs[0]",
        None,
    ),
    Sample(
        "negative-dimension",
        _set(_INPUT, {"name": "input", "shape": [-2, 3]}),
        "spec.export.inputs[0].shape",
        "dimensions are positive or -1",
    ),
    Sample(
        "duplicate-input-names",
        lambda d: d["spec"]["export"]["inputs"].append({"name": "input", "shape": [1]}),
        "spec.export.inputs",
    ),
    Sample(
        "two-target-kinds",
        _set("spec.targets.0", {"computeCapability": "8.9", "product": "NVIDIA-L4"}),
        "spec.targets[0]",
        "set exactly one of computeCapability, product, auto, cpu",
    ),
    Sample("empty-target", _set("spec.targets.1", {}), "spec.targets[1]", "set exactly one"),
    Sample("auto-false-alone", _set("spec.targets.1", {"auto": False}), "spec.targets[1]", "set exactly one"),
    Sample(
        "cpu-target-with-tensorrt",
        _set("spec.targets.0", {"cpu": True, "backend": "tensorrt"}),
        "spec.targets[0]",
        "a cpu target builds with onnxruntime",
    ),
    Sample(
        "onnxruntime-gpu-target",
        _set("spec.targets.0", {"computeCapability": "8.9", "backend": "onnxruntime"}),
        "spec.targets",
        "onnxruntime engines are CPU engines",
    ),
    Sample(
        "onnxruntime-build-backend-gpu-target",
        _all(_set("spec.build.backend", "onnxruntime"), _set("spec.build.precision", "fp32")),
        "spec.targets",
        "onnxruntime engines are CPU engines",
    ),
    Sample(
        "rtx-cannot-target-hopper",
        _set("spec.targets.0.computeCapability", "9.0"),
        "spec.targets",
        "tensorrt-rtx cannot target",
    ),
    Sample(
        "rtx-default-backend-cannot-target-hopper",
        _all(_drop("spec.build"), _set("spec.targets", [{"computeCapability": "10.0"}])),
        "spec.targets",
        "tensorrt-rtx cannot target",
    ),
    Sample(
        "rtx-int8", _set("spec.build.precision", "int8"), "spec.build.precision", "tensorrt-rtx cannot build"
    ),
    Sample(
        "rtx-target-override-int8",
        _all(
            _set("spec.build", {"backend": "tensorrt", "precision": "int8", "calibration": "s3://c/c.npz"}),
            _set("spec.targets.1", {"computeCapability": "8.6", "backend": "tensorrt-rtx"}),
        ),
        "spec.build.precision",
        "tensorrt-rtx cannot build",
    ),
    Sample(
        "int8-without-calibration",
        _set("spec.build", {"backend": "tensorrt", "precision": "int8"}),
        "spec.build.calibration",
        "int8 with tensorrt needs a calibration dataset",
    ),
    Sample(
        "int8-empty-calibration",
        _set("spec.build", {"backend": "tensorrt", "precision": "int8", "calibration": ""}),
        "spec.build.calibration",
        "int8 with tensorrt needs a calibration dataset",
    ),
    Sample(
        "serving-min-above-max",
        _set("spec.serving", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.serving",
        "minReplicas must be <= maxReplicas",
    ),
    Sample(
        "serving-min-above-default-max",
        _set("spec.serving", {"minReplicas": 3}),
        "spec.serving",
        "minReplicas must be <= maxReplicas",
    ),
]
