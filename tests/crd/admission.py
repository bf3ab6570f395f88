"""An offline stand-in for what the API server does with a ModelEngine the CRD describes.

KMock checks nothing of a CRD, so the agreement tests need something that applies the
generated CRD the way kube-apiserver does, in the same order:

1. route: apiVersion/kind must name the CRD's group/version/kind; metadata.name must be a
   DNS-1123 subdomain (the server checks names of every object);
2. default: fill `default`s from the structural schema into present objects;
3. validate the OpenAPI schema (jsonschema, after turning OpenAPI 3.0's boolean
   exclusiveMinimum/Maximum into draft 2020's numbers), refusing unknown fields as
   kubectl's default `--validate=strict` server-side field validation does;
4. enforce `x-kubernetes-list-type: map` keys (unique per list);
5. evaluate every `x-kubernetes-validations` rule with cel-python on the node it is
   attached to (`self` = that node's value), like the server's CEL validator.

Each problem is one line `path: message`, the path written as `spec.export.inputs[0].min`
(rule fieldPath appended), so tests can compare it with the Python validator's line.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_OPENAPI_ONLY = ("x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys")


def render_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (structural, k8s flavour) -> draft 2020 JSON Schema, unknown fields refused."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _OPENAPI_ONLY or key == "x-kubernetes-preserve-unknown-fields":
            continue
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_jsonschema(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if node.get(bound) is True:
            out[bound] = out.pop(plain)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting: absent properties with a default get it, recursively."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            if name in props:
                apply_defaults(item, props[name])
            elif isinstance(schema.get("additionalProperties"), dict):
                apply_defaults(item, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def evaluate_rule(rule: str, value: Any) -> bool:
    """True when the rule holds; an evaluation error counts as a failure (as on the server)."""
    try:
        result = _program(rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False
    return isinstance(result, BoolType) and bool(result)


def walk_rules(value: Any, schema: dict[str, Any], path: list[str | int]) -> list[str]:
    """Evaluate every x-kubernetes-validations rule on the value it applies to."""
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not evaluate_rule(rule["rule"], value):
            where = render_path(path) + rule.get("fieldPath", "")
            problems.append(f"{where}: {rule['message']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, item in value.items():
            sub = props.get(name, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                problems += walk_rules(item, sub, [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += walk_rules(item, schema["items"], [*path, i])
    return problems


def walk_list_maps(value: Any, schema: dict[str, Any], path: list[str | int]) -> list[str]:
    problems = []
    if isinstance(value, list):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema["x-kubernetes-list-map-keys"]
            seen: set[str] = set()
            for i, item in enumerate(value):
                key = repr([item.get(k) for k in keys]) if isinstance(item, dict) else repr(item)
                if key in seen:
                    problems.append(f"{render_path([*path, i])}: Duplicate value: {', '.join(keys)} {key}")
                seen.add(key)
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems += walk_list_maps(item, schema["items"], [*path, i])
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                problems += walk_list_maps(item, props[name], [*path, name])
    return problems


def _schema_problem(err: jsonschema.ValidationError) -> str:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return "; ".join(f"{render_path([*path, name])}: unknown field" for name in extra)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        return f"{render_path([*path, *missing])}: Required value"
    return f"{render_path(path)}: {err.message}"


def crd_version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return dict(version)


def admit(doc: Any, crd: dict[str, Any]) -> list[str]:
    """Every problem the API server would report creating `doc`; [] when it is accepted."""
    if not isinstance(doc, dict):
        return ["object is not a mapping"]
    version = crd_version(crd)
    schema = version["schema"]["openAPIV3Schema"]
    expected = f"{crd['spec']['group']}/{version['name']}"
    if doc.get("apiVersion") != expected or doc.get("kind") != crd["spec"]["names"]["kind"]:
        return [f"no matches for kind {doc.get('kind')!r} in version {doc.get('apiVersion')!r}"]
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [f"metadata.name: Invalid value: {name!r}: must be a lowercase RFC 1123 subdomain"]

    obj = apply_defaults(copy.deepcopy(doc), schema)
    validator = jsonschema.Draft202012Validator(to_jsonschema(schema))
    problems = [_schema_problem(e) for e in sorted(validator.iter_errors(obj), key=str)]
    problems += walk_list_maps(obj, schema, [])
    problems += walk_rules(obj, schema, [])
    return problems
