"""What a real API server (v1.36) stores for what it was sent: empties dropped, defaults filled.

A client that compares what it wants with what it reads back must do so against this
form, so the fake server stores it too:

- empty lists are dropped everywhere (every list field of the built-in kinds is
  `omitempty`), as are empty maps in map-typed fields (labels, annotations, selectors,
  nodeSelector, resources, data); empty *structs* (`emptyDir: {}`, `securityContext: {}`)
  stay, as the server keeps a set pointer;
- the defaults the built-in kinds get (pkg/apis/*/v1/defaults.go), for Jobs, Deployments,
  Pods (templates), Services and HPAs: the ones a spec comparison trips on.

Custom resources (ModelEngines) are stored as sent: their structural schema's defaults
are the CRD's business, not this module's.

Every object, custom or not, also carries `metadata.managedFields` as a real server keeps
them (one entry per manager and subresource, the fields it set): a client that caches
whole objects pays for them, as it would in a cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

MAP_FIELDS = frozenset(
    {"labels", "annotations", "matchLabels", "nodeSelector", "limits", "requests", "data", "stringData"}
)
TYPED_PLURALS = frozenset(
    {"jobs", "deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "pods", "secrets"}
)


def drop_empty(value: Any, key: str = "") -> Any:
    """A copy without empty lists (anywhere) and empty maps in map-typed fields."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = drop_empty(v, k)
            if isinstance(v, list) and not v:
                continue
            if isinstance(v, dict) and not v and (k in MAP_FIELDS or (key == "spec" and k == "selector")):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [drop_empty(v) for v in value]
    return value


def _probe(probe: dict[str, Any]) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _image_pull_policy(image: str) -> str:
    tag = image.rpartition("/")[2]
    if "@" in tag:
        return "IfNotPresent"
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def _container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", _image_pull_policy(str(container.get("image", ""))))
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        if isinstance(container.get(name), dict):
            _probe(container[name])
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        if isinstance(source.get("fieldRef"), dict):
            source["fieldRef"].setdefault("apiVersion", "v1")


def pod_spec(spec: dict[str, Any], *, restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if isinstance(container, dict):
            _container(container)
    for volume in spec.get("volumes") or []:
        for kind in ("secret", "configMap"):
            if isinstance(volume.get(kind), dict):
                volume[kind].setdefault("defaultMode", 420)


def _job(job: dict[str, Any]) -> None:
    meta, spec = job.setdefault("metadata", {}), job.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    if not meta.get("labels") and template_meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    if not spec.get("manualSelector"):
        uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta["labels"] = {
            **(template_meta.get("labels") or {}),
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}), restart_policy="Never")


def _deployment(deployment: dict[str, Any]) -> None:
    spec = deployment.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def _service(service: dict[str, Any], cluster_ip: str) -> None:
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec.setdefault("clusterIP", cluster_ip)
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _autoscaler(hpa: dict[str, Any]) -> None:
    spec = hpa.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    behavior = spec.setdefault("behavior", {})
    behavior.setdefault(
        "scaleUp",
        {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        },
    )
    behavior.setdefault(
        "scaleDown",
        {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
    )


def stored_form(plural: str, obj: dict[str, Any], *, cluster_ip: str = "10.96.0.10") -> dict[str, Any]:
    """The object as a real server would store it (input untouched)."""
    if plural not in TYPED_PLURALS:
        return obj
    out = drop_empty(copy.deepcopy(obj))
    if plural == "jobs":
        _job(out)
    elif plural == "deployments":
        _deployment(out)
    elif plural == "services":
        _service(out, cluster_ip)
    elif plural == "horizontalpodautoscalers":
        _autoscaler(out)
    elif plural == "pods":
        pod_spec(out.setdefault("spec", {}))
    stored: dict[str, Any] = drop_empty(out)
    return stored


def merge_patch_to(current: Any, target: Any) -> Any:
    """The JSON merge patch that turns `current` into `target` (None deletes a key)."""
    if not isinstance(current, dict) or not isinstance(target, dict):
        return target
    patch: dict[str, Any] = {}
    for key in current.keys() - target.keys():
        patch[key] = None
    for key, value in target.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch_to(current[key], value) if isinstance(value, dict) else value
    return patch


def fields_v1(value: Any) -> Any:
    """The `fieldsV1` set of a value, as server-side field tracking writes it: `f:<field>`
    for map keys, `k:{"name":...}` for list items keyed by name (containers, env, ports
    and the like), `.` for a field that is itself set."""
    if isinstance(value, dict):
        return {f"f:{key}": fields_v1(item) for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        return {
            "k:" + json.dumps({"name": item["name"]}, separators=(",", ":")): {".": {}, **fields_v1(item)}
            for item in value
        }
    return {}


def managed_fields(
    current: list[dict[str, Any]] | None,
    *,
    manager: str,
    obj: dict[str, Any],
    subresource: str | None,
    now: str,
) -> list[dict[str, Any]]:
    """`metadata.managedFields` after a write by `manager`: its entry for (operation, subresource)
    replaced by the fields it just set (metadata other than labels/annotations/owners, and
    status on the main resource, are not tracked)."""
    if subresource == "status":
        tracked = {"status": obj.get("status")} if obj.get("status") else {}
    else:
        meta = obj.get("metadata") or {}
        kept = {k: meta[k] for k in ("labels", "annotations", "ownerReferences", "finalizers") if meta.get(k)}
        tracked = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
        if kept:
            tracked["metadata"] = kept
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": obj.get("apiVersion", "v1"),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(tracked),
    }
    if subresource:
        entry["subresource"] = subresource
    others = [e for e in current or [] if (e.get("manager"), e.get("subresource")) != (manager, subresource)]
    return [*others, entry]
