"""The generated CRD: no drift from the committed YAML, structural, and rules Kubernetes can run.

What the API server would refuse at `kubectl apply -f crds/` is checked here offline:
every schema node typed, no references or unions, defaults valid for their own node,
`kubernetes-validate` (the apiextensions/v1 schema) passes, and every CEL rule compiles,
reads only fields the schema declares, calls only what Kubernetes' CEL offers, and walks
only lists with a `maxItems` bound (what keeps the server's cost estimate finite).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, Field

from modelengine.api.crd import SchemaError, crd_yaml, generate_crd, model_schema
from modelengine.api.models import (
    Condition,
    EnginePhase,
    EngineStatus,
    ModelEngineStatus,
    Phase,
)
from modelengine.cli import main

from .admission import _program, crd_version, to_jsonschema

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "modelengine.io_modelengines.yaml"
REGENERATE = "modelengine crd -o crds/modelengine.io_modelengines.yaml"

CRD = generate_crd()
SCHEMA = crd_version(CRD)["schema"]["openAPIV3Schema"]


def nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.spec.export.inputs[]`)."""
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += nodes(node["additionalProperties"], f"{path}{{}}")
    return found


# --- drift ---------------------------------------------------------------------------


def test_committed_crd_matches_generator() -> None:
    assert COMMITTED.read_text() == crd_yaml(), f"crds/ drifted from api/models.py: run `{REGENERATE}`"


def test_crd_command_prints_and_writes_the_same_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()
    out = tmp_path / "crd.yaml"
    assert main(["crd", "-o", str(out)]) == 0
    assert out.read_text() == crd_yaml()


def test_crd_command_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelengine.cli", "crd"], capture_output=True, text=True, check=True
    )
    assert yaml.safe_load(proc.stdout)["metadata"]["name"] == "modelengines.modelengine.io"


def test_crd_command_bad_output_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "-o", str(tmp_path / "missing" / "crd.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "missing" in err and "does not exist" in err


# --- identity and printing -----------------------------------------------------------


def test_names_scope_and_subresources() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "modelengines.modelengine.io"
    assert spec["group"] == "modelengine.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelEngine"
    assert spec["names"]["plural"] == "modelengines"
    assert spec["names"]["shortNames"] == ["me"]
    version = crd_version(CRD)
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in crd_version(CRD)["additionalPrinterColumns"]}
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Targets Ready"]["jsonPath"] == ".status.targetsReady"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    # Every column points at a field the schema declares.
    declared = {path for path, _ in nodes(SCHEMA)}
    for column in columns.values():
        if not column["jsonPath"].startswith(".metadata"):
            assert column["jsonPath"] in declared, column


# --- structural schema ---------------------------------------------------------------


def test_every_node_is_structural() -> None:
    for path, node in nodes(SCHEMA):
        assert "type" in node, f"{path}: no type"
        for forbidden in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "nullable"):
            assert forbidden not in node, f"{path}: {forbidden}"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            pytest.fail(f"{path}: free-form field; every field of the models is typed")


def test_defaults_are_valid_for_their_node() -> None:
    defaults = [(path, node) for path, node in nodes(SCHEMA) if "default" in node]
    assert len(defaults) > 10
    for path, node in defaults:
        bare = {k: v for k, v in node.items() if k != "default"}
        jsonschema.validate(node["default"], to_jsonschema(bare))
        assert node["default"] is not None, path


def test_field_bounds_survive_generation() -> None:
    by_path = dict(nodes(SCHEMA))
    assert by_path[".spec.build.backend"]["enum"] == ["tensorrt", "tensorrt-rtx", "onnxruntime"]
    assert by_path[".spec.build.workspaceMiB"]["minimum"] == 16
    assert by_path[".spec.export.opset"]["maximum"] == 23
    assert by_path[".spec.export.inputs[].shape"]["maxItems"] == 8
    assert by_path[".spec.targets"]["maxItems"] == 64
    assert by_path[".spec.model.entrypoint"]["pattern"].startswith("^")
    assert by_path[".spec.storage.uri"]["minLength"] == 1
    assert by_path[".spec.export.method"]["default"] == "trace"
    assert by_path[".status.engines[].validation{}"] == {"type": "number"}
    assert set(by_path[".spec"]["required"]) == {"model", "export", "targets", "storage"}


def test_kubernetes_validate_accepts_the_crd() -> None:
    committed = yaml.safe_load(COMMITTED.read_text())
    kubernetes_validate.validate(committed, "1.30.0", strict=True)
    kubernetes_validate.validate(committed, kubernetes_validate.utils.latest_version(), strict=True)


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    broken = generate_crd()
    broken["spec"]["scope"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


def test_status_written_by_the_operator_fits_the_status_schema() -> None:
    status = ModelEngineStatus(
        phase=Phase.PARTIALLY_READY,
        observed_generation=3,
        model_digest="sha256:" + "a" * 64,
        targets_ready="1/2",
        engines=[
            EngineStatus(
                target="sm89",
                build_key="k" * 64,
                phase=EnginePhase.READY,
                backend="tensorrt-rtx",
                backend_version="1.7.1.116",
                compute_capability="8.9",
                uri="s3://engines/k/engine.plan",
                sha256="b" * 64,
                size=123456,
                build_seconds=12.5,
                validation={"max_abs_err": 0.0004, "max_rel_err": 0.001},
                job_name="me-build-kkkk",
                cached=False,
            ),
            EngineStatus(
                target="cpu", build_key="c" * 64, phase=EnginePhase.FAILED, backend="onnxruntime", reason="x"
            ),
        ],
        conditions=[Condition(type="Ready", status="False", reason="Building", message="1 of 2")],
        message="1 of 2 engines ready",
    ).to_wire()
    validator = jsonschema.Draft202012Validator(to_jsonschema(SCHEMA["properties"]["status"]))
    assert list(validator.iter_errors(status)) == []
    status["phase"] = "Exploded"
    assert list(validator.iter_errors(status)) != []


# --- CEL rules -----------------------------------------------------------------------

# What Kubernetes' CEL environment offers that the rules may call (standard macros and
# functions, and the `in` operator; no index ranges, no user functions).
ALLOWED_CALLS = {"has", "size", "all", "exists", "exists_one", "map", "filter", "matches"}


def rules() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    return [
        (path, node, rule)
        for path, node in nodes(SCHEMA)
        for rule in node.get("x-kubernetes-validations", [])
    ]


def resolve(node: dict[str, Any], fields: list[str]) -> dict[str, Any] | None:
    for name in fields:
        props = node.get("properties", {})
        if name not in props:
            return None
        node = props[name]
    return node


def test_rules_compile_and_carry_messages() -> None:
    found = rules()
    assert len(found) >= 18
    for path, _, rule in found:
        _program(rule["rule"])  # raises on a syntax error
        assert rule["message"] and "\n" not in rule["message"], path
        assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
        assert rule.get("reason", "FieldValueInvalid") in {
            "FieldValueInvalid",
            "FieldValueRequired",
            "FieldValueForbidden",
            "FieldValueDuplicate",
        }


def test_rules_call_only_kubernetes_cel_functions() -> None:
    for path, _, rule in rules():
        calls = set(re.findall(r"([A-Za-z_][A-Za-z_0-9]*)\s*\(", rule["rule"]))
        assert calls <= ALLOWED_CALLS, (path, calls - ALLOWED_CALLS)
        assert "oldSelf" not in rule["rule"], "transition rules need care with optional fields"


def test_rules_read_only_declared_fields() -> None:
    """`self.a.b` (and `t.x` for targets) must name fields the schema has: the server type-checks."""
    for path, node, rule in rules():
        text = rule["rule"]
        for chain in re.findall(r"\bself((?:\.[A-Za-z_]\w*)+)", text):
            fields = [f for f in chain.split(".")[1:] if f not in ALLOWED_CALLS]
            assert resolve(node, fields) is not None, (path, chain)
        for chain in re.findall(r"\bt((?:\.[A-Za-z_]\w*)+)", text):
            target = node["properties"]["targets"]["items"]
            assert resolve(target, chain.split(".")[1:]) is not None, (path, chain)
        if "fieldPath" in rule:
            assert resolve(node, rule["fieldPath"].lstrip(".").split(".")) is not None, (path, rule)


def test_lists_walked_by_rules_are_bounded() -> None:
    for path, node, rule in rules():
        for chain in re.findall(
            r"\bself((?:\.[A-Za-z_]\w*)+)\.(?:all|exists|exists_one|map|filter)\(", rule["rule"]
        ):
            target = resolve(node, chain.split(".")[1:])
            assert target is not None and target["type"] == "array", (path, chain)
            assert "maxItems" in target, f"{path}: rule walks unbounded list {chain}"


def test_inputs_are_a_list_map_keyed_by_name() -> None:
    inputs = dict(nodes(SCHEMA))[".spec.export.inputs"]
    assert inputs["x-kubernetes-list-type"] == "map"
    assert inputs["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in inputs["items"]["required"]


# --- the generator itself --------------------------------------------------------------


class _Knobs(BaseModel):
    ratio: float = Field(gt=0, lt=1)
    labels: dict[str, str] | None = None
    anything: dict[str, Any] = Field(default_factory=dict)
    choice: int | str = 1


def test_generator_converts_exclusive_bounds_and_maps() -> None:
    raw = _Knobs.model_json_schema()
    raw["properties"].pop("choice")
    raw.pop("required", None)

    class _Wrapped(BaseModel):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return raw

    schema = model_schema(_Wrapped)
    ratio = schema["properties"]["ratio"]
    assert ratio == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "exclusiveMinimum": True,
        "exclusiveMaximum": True,
    }
    assert schema["properties"]["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert schema["properties"]["anything"]["x-kubernetes-preserve-unknown-fields"] is True


def test_generator_refuses_real_unions() -> None:
    with pytest.raises(SchemaError, match="anyOf with 2 non-null variants"):
        model_schema(_Knobs)
