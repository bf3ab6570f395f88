"""What a real API server (v1.36) refuses, as the fake one must refuse it too.

Each rule answers with the causes a real server puts into its `422 Invalid` Status, in
the same words, so the operator's error reporting is tested against the real text:

- names: DNS-1123 subdomain (≤ 253) for most kinds; Jobs also put their name into the
  pod template's `job-name` labels, so a Job name must be a valid label value (≤ 63);
  Service names are DNS-1035 labels (≤ 63, starting with a letter: the rule on every
  release up to at least 1.33, stricter than the later relaxed one, so safe to assume);
- labels (object, pod template, selector): qualified-name keys and apimachinery's value
  rule `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, ≤ 63 characters;
- the Kubernetes OpenAPI schema (kubernetes-validate's strict schemas: unknown fields are
  errors, where a real server would drop them with only a warning) for the kinds the
  operator writes: Jobs, Deployments, Services, HPAs, PDBs;
- Job status: `Complete=True` needs `SuccessCriteriaMet=True`, `Failed=True` needs
  `FailureTarget=True`, a finished Job needs `startTime`, a Complete one `completionTime`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

# plural → (kind, group) of the kinds whose schema is checked
SCHEMA_KINDS: dict[str, tuple[str, str]] = {
    "jobs": ("Job", "batch/v1"),
    "deployments": ("Deployment", "apps/v1"),
    "services": ("Service", "v1"),
    "horizontalpodautoscalers": ("HorizontalPodAutoscaler", "autoscaling/v2"),
    "poddisruptionbudgets": ("PodDisruptionBudget", "policy/v1"),
}
KUBE_VERSION = "1.36"


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def text(self) -> str:
        return f"{self.field}: {self.message}"


def _invalid(value: str, detail: str) -> str:
    return f'Invalid value: "{value}": {detail}'


def label_value_causes(value: str, field: str) -> list[Cause]:
    causes = []
    if len(value) > 63:
        causes.append(Cause(field, _invalid(value, "must be no more than 63 characters")))
    if not LABEL_VALUE.fullmatch(value):
        causes.append(Cause(field, _invalid(value, LABEL_VALUE_MESSAGE)))
    return causes


def label_key_causes(key: str, field: str) -> list[Cause]:
    prefix, slash, name = key.rpartition("/")
    causes = []
    if slash and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        causes.append(Cause(field, _invalid(key, f"prefix part {SUBDOMAIN_MESSAGE}")))
    if not name or len(name) > 63:
        causes.append(Cause(field, _invalid(key, "name part must be no more than 63 characters")))
    elif not QUALIFIED_NAME.fullmatch(name):
        causes.append(Cause(field, _invalid(key, QUALIFIED_NAME_MESSAGE)))
    return causes


def labels_causes(labels: Any, field: str) -> list[Cause]:
    if not isinstance(labels, dict):
        return []
    causes = []
    for key, value in labels.items():
        causes += label_key_causes(str(key), field)
        causes += label_value_causes(str(value), field)
    return causes


def name_causes(plural: str, name: str) -> list[Cause]:
    field = "metadata.name"
    if not name:
        return [Cause(field, "Required value: name or generateName is required", "FieldValueRequired")]
    if plural == "services":
        if len(name) > 63:
            return [Cause(field, _invalid(name, "must be no more than 63 characters"))]
        return [] if DNS1035_LABEL.fullmatch(name) else [Cause(field, _invalid(name, DNS1035_MESSAGE))]
    causes = []
    if len(name) > 253:
        causes.append(Cause(field, _invalid(name, "must be no more than 253 characters")))
    if not DNS1123_SUBDOMAIN.fullmatch(name):
        causes.append(Cause(field, _invalid(name, SUBDOMAIN_MESSAGE)))
    return causes


def object_causes(plural: str, obj: dict[str, Any]) -> list[Cause]:
    """Name and label causes of an object as it would be stored (Job labels already added)."""
    meta = obj.get("metadata") or {}
    causes = name_causes(plural, str(meta.get("name") or ""))
    causes += labels_causes(meta.get("labels"), "metadata.labels")
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    template: dict[str, Any] = spec["template"] if isinstance(spec.get("template"), dict) else {}
    causes += labels_causes((template.get("metadata") or {}).get("labels"), "spec.template.labels")
    selector = spec.get("selector")
    if isinstance(selector, dict):
        match = selector.get("matchLabels") if plural != "services" else selector
        field = "spec.selector.matchLabels" if plural != "services" else "spec.selector"
        causes += labels_causes(match, field)
    return causes


@functools.cache
def _validator(kind: str, api_version: str) -> Any:
    """One compiled strict validator per kind (kubernetes-validate builds one per call: slow)."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    schema_dir = f"v{KUBE_VERSION}.0-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", KUBE_VERSION
    )
    definitions = utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/_definitions.json", KUBE_VERSION
    )
    registry: Any = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_causes(plural: str, obj: dict[str, Any]) -> list[Cause]:
    if plural not in SCHEMA_KINDS:
        return []
    kind, api_version = SCHEMA_KINDS[plural]
    causes = []
    for error in _validator(kind, api_version).iter_errors(obj):
        field = ".".join(str(p) for p in error.absolute_path) or "<root>"
        causes.append(
            Cause(field, f"{error.message} (strict schema of {kind} {api_version} v{KUBE_VERSION})")
        )
    return causes


def _true(conditions: list[dict[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def job_status_causes(status: dict[str, Any]) -> list[Cause]:
    """The 1.36 Job status rules on the status a write would store."""
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    field = "status.conditions"
    causes = []
    complete, failed = _true(conditions, "Complete"), _true(conditions, "Failed")
    if complete and not _true(conditions, "SuccessCriteriaMet"):
        causes.append(
            Cause(
                field,
                "Invalid value: cannot set Complete=True condition without the SuccessCriteriaMet=true condition",
            )
        )
    if failed and not _true(conditions, "FailureTarget"):
        causes.append(
            Cause(
                field,
                "Invalid value: cannot set Failed=True condition without the FailureTarget=true condition",
            )
        )
    if (complete or failed) and not status.get("startTime"):
        causes.append(
            Cause(
                "status.startTime",
                "Required value: startTime is required for finished job",
                "FieldValueRequired",
            )
        )
    if complete and not status.get("completionTime"):
        causes.append(
            Cause(
                "status.completionTime",
                "Required value: completionTime is required for Complete jobs",
                "FieldValueRequired",
            )
        )
    return causes


def failure_status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `Status` body as a real server answers a refused request (`details` when it has them)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def invalid_status(*, kind: str, api_version: str, name: str, causes: list[Cause]) -> dict[str, Any]:
    """The `422 Invalid` Status body a real server answers with."""
    group = api_version.rpartition("/")[0]
    qualified = f"{kind}.{group}" if group else kind
    texts = [c.text() for c in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = {
        "name": name,
        **({"group": group} if group else {}),
        "kind": kind,
        "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
    }
    return failure_status(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)
