"""Spec validation: every problem is one line naming the field, and valid specs pass."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from modelengine.api import SpecError, load_modelengine, parse_modelengine
from modelengine.api.models import BackendName, Precision

BASE: dict[str, Any] = {
    "apiVersion": "modelengine.io/v1alpha1",
    "kind": "ModelEngine",
    "metadata": {"name": "combinednet", "namespace": "ml"},
    "spec": {
        "model": {"source": "file:///models/net", "format": "python", "entrypoint": "net:build"},
        "export": {
            "method": "trace",
            "inputs": [
                {
                    "name": "input",
                    "shape": [-1, 3, 32, 32],
                    "min": [1, 3, 32, 32],
                    "opt": [4, 3, 32, 32],
                    "max": [16, 3, 32, 32],
                }
            ],
        },
        "targets": [{"cpu": True}, {"computeCapability": "8.9"}],
        "storage": {"uri": "s3://bucket/engines", "secretRef": {"name": "creds"}},
    },
}


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d["spec"]
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        if value is None:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return d


def problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_modelengine(d)
    return info.value.problems


def test_valid_spec_parses_with_defaults() -> None:
    me = parse_modelengine(BASE)
    assert me.spec.build.backend is BackendName.TENSORRT_RTX
    assert me.spec.build.precision is Precision.FP32
    assert me.spec.export.inputs[0].profile() == ([1, 3, 32, 32], [4, 3, 32, 32], [16, 3, 32, 32])
    # The wire form round-trips through camelCase.
    assert parse_modelengine({**BASE, "spec": me.spec.to_wire()}).spec == me.spec


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"build": {"backend": "tensorflow"}}, "spec.build.backend: must be one of"),
        ({"build": {"precision": "fp4"}}, "spec.build.precision: must be one of"),
        ({"export__inputs__0__min": [8, 3, 32, 32]}, "dimension 0 needs min <= opt <= max, got 8/4/16"),
        (
            {"export__inputs__0__max": [16, 3, 32]},
            "spec.export.inputs[0].max: rank 3 differs from shape rank 4",
        ),
        ({"export__inputs__0__opt": None}, "dynamic shape [-1, 3, 32, 32] needs opt"),
        ({"export__inputs__0__min": [1, 4, 32, 32]}, "static dimension 1 is 3"),
        ({"model__entrypoint": None}, "spec.model.entrypoint: required when format is python"),
        ({"targets": [{"cpu": True, "computeCapability": "8.9"}]}, "set exactly one of"),
        ({"targets": [{"computeCapability": "9.0"}]}, "tensorrt-rtx cannot target 9.0"),
        (
            {"build": {"backend": "tensorrt", "precision": "int8"}},
            "int8 with tensorrt needs a calibration dataset",
        ),
        ({"build": {"precision": "fp8"}}, "tensorrt-rtx cannot build fp8"),
        ({"build": {"workspaceMiB": -5}}, "spec.build.workspaceMiB"),
        (
            {"export": {"method": "mixed", "inputs": BASE["spec"]["export"]["inputs"]}},
            "mixed needs at least one",
        ),
        ({"targets": [{"computeCapability": "8.9", "backend": "onnxruntime"}]}, "use `cpu: true`"),
        ({"storage": {"uri": "s3://b", "password": "x"}}, "spec.storage.password: unknown field"),
    ],
)
def test_each_problem_is_one_clear_line(changes: dict[str, Any], expected: str) -> None:
    lines = problems(doc(**changes))
    assert any(expected in line for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_several_problems_are_all_reported() -> None:
    d = doc(model__entrypoint=None, targets=[{"computeCapability": "9.0"}])
    lines = problems(d)
    assert len(lines) == 2, lines


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="not a mapping"):
        parse_modelengine(["a"])


def test_load_yaml_resolves_relative_paths(tmp_path: Path) -> None:
    import yaml

    d = doc(model__source="models/net")
    d["spec"]["storage"] = {"uri": "store"}
    (tmp_path / "me.yaml").write_text(yaml.safe_dump(d))
    me = load_modelengine(tmp_path / "me.yaml")
    assert me.spec.model.source == (tmp_path / "models/net").resolve().as_uri()
    assert me.spec.storage.uri == (tmp_path / "store").resolve().as_uri()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("kind: [unclosed", "not valid YAML at line 1"), ("kind: Other\n", "exactly one ModelEngine document")],
)
def test_load_yaml_errors(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SpecError, match=expected) as info:
        load_modelengine(tmp_path / "bad.yaml")
    assert str(info.value).startswith(str(tmp_path / "bad.yaml"))


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="cannot read file"):
        load_modelengine("/nonexistent/me.yaml")
