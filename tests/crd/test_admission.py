"""The offline admission stand-in behaves like the API server where the agreement tests lean on it."""

from __future__ import annotations

from typing import Any

from modelengine.api.crd import generate_crd

from .admission import admit, apply_defaults, evaluate_rule, to_jsonschema, walk_list_maps, walk_rules
from .samples import base

CRD = generate_crd()


def test_defaults_fill_absent_fields_of_present_objects_only() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "default": 3},
            "inner": {"type": "object", "properties": {"b": {"type": "string", "default": "x"}}},
            "absent": {"type": "object", "properties": {"c": {"type": "integer", "default": 1}}},
        },
    }
    assert apply_defaults({"inner": {}}, schema) == {"a": 3, "inner": {"b": "x"}}


def test_openapi_exclusive_bounds_become_draft_2020() -> None:
    node = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
    assert to_jsonschema(node) == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


def test_unknown_fields_are_refused_like_strict_field_validation() -> None:
    doc = base()
    doc["spec"]["model"]["checksum"] = "abc"
    assert admit(doc, CRD) == ["spec.model.checksum: unknown field"]


def test_list_map_keys_must_be_unique() -> None:
    schema: dict[str, Any] = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
    }
    assert walk_list_maps([{"name": "a"}, {"name": "b"}], schema, ["xs"]) == []
    assert walk_list_maps([{"name": "a"}, {"name": "a"}], schema, ["xs"]) == [
        "xs[1]: Duplicate value: name ['a']"
    ]


def test_rules_apply_to_each_list_item_with_field_path() -> None:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.n > 0", "message": "positive", "fieldPath": ".n"}],
        },
    }
    assert walk_rules([{"n": 1}, {"n": 0}], schema, ["xs"]) == ["xs[1].n: positive"]


def test_a_rule_that_errors_fails_as_on_the_server() -> None:
    assert evaluate_rule("self.missing == 1", {}) is False
    assert evaluate_rule("!has(self.missing) || self.missing == 1", {}) is True


def test_wrong_group_version_kind_is_not_routed() -> None:
    doc = base()
    doc["kind"] = "ModelEngines"
    (problem,) = admit(doc, CRD)
    assert problem.startswith("no matches for kind")


def test_a_valid_base_is_admitted() -> None:
    assert admit(base(), CRD) == []
