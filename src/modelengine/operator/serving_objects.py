"""`spec.serving`: per serving group a Deployment, HPA and PDB; one Service for them all.

Pure functions only: each renders one manifest from the ModelEngine, the operator's
configuration and a serving group (`serving_groups`); `serving` applies them. Every pod
runs the runtime sidecar (`modelengine serve`), which reads the release record
`releases/<namespace>/<name>.json` and picks the engine for the GPU it finds.

A GPU group's pods ask for `nvidia.com/gpu: 1`, tolerate the GPU taint and require the
GPU Feature Discovery labels of their kind (compute capability and product), so they only
land where the engine built for them runs. Rollouts never take a ready pod away before its
replacement is ready (`maxUnavailable: 0`), so an engine failing acceptance on one kind
stalls there while the old pods keep serving. Selectors are fixed per group (immutable in
a Deployment): the ModelEngine's name label, the component and the group.

`needs_update` compares only the fields we render: the API server adds defaults
(strategy details, terminationMessagePath, clusterIP, ...) and drops empty collections;
neither may count as a difference, otherwise every reconcile would write.
"""

from __future__ import annotations

from typing import Any

from modelengine.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    AutoscalingSpec,
    BatchingSpec,
    ModelEngine,
    ServingSpec,
)
from modelengine.operator.build_jobs import LABEL_MANAGED, LABEL_NAME, MANAGED_BY
from modelengine.operator.config import OperatorConfig
from modelengine.operator.names import dns_label, label_value
from modelengine.operator.pod_parts import (
    GPU_TOLERATION,
    container_security,
    cpu_terms,
    gpu_terms,
    required_affinity,
)
from modelengine.operator.serving_groups import ServingGroup

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_GROUP = "modelengine.io/serving-group"
COMPONENT = "runtime"
RUNTIME_VOLUME = "tmp"  # the emptyDir at /tmp (read-only root filesystem)
PROGRESS_DEADLINE_SECONDS = 600
# Per-pod custom metrics the HPA reads through a Prometheus adapter (see docs/operator.md).
POD_METRICS = {
    "inflight": "modelengine_runtime_inflight_requests",
    "rps": "modelengine_runtime_requests_per_second",
}


def serving_name(name: str) -> str:
    """The Service's name: a DNS-1035 label derived from the ModelEngine's name."""
    return dns_label(name, suffix="-runtime")


def group_name(name: str, group: ServingGroup) -> str:
    """The group's Deployment / HPA / PDB name, e.g. `resnet-nvidia-l4-runtime`."""
    return dns_label(f"{name}-{group.slug}", suffix="-runtime")


def _labels(me: ModelEngine, group: ServingGroup | None = None) -> dict[str, str]:
    labels = {
        LABEL_NAME: label_value(me.metadata.name),
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED: MANAGED_BY,
    }
    if group is not None:
        labels[LABEL_GROUP] = label_value(group.slug)
    return labels


def _selector(me: ModelEngine, group: ServingGroup | None = None) -> dict[str, str]:
    selector = {LABEL_NAME: label_value(me.metadata.name), LABEL_COMPONENT: COMPONENT}
    if group is not None:
        selector[LABEL_GROUP] = label_value(group.slug)
    return selector


def _metadata(
    me: ModelEngine, uid: str | None, name: str, group: ServingGroup | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": me.metadata.namespace, "labels": _labels(me, group)}
    if uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": me.metadata.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return meta


def _serving(me: ModelEngine) -> ServingSpec:
    if me.spec.serving is None:
        raise ValueError(f"{me.metadata.namespace}/{me.metadata.name}: spec.serving is not set")
    return me.spec.serving


def runtime_command(me: ModelEngine) -> list[str]:
    """`modelengine serve` for this ModelEngine; batching defaults apply without `spec.serving`
    (an injected sidecar, `webhook`, serves ModelEngines that have none)."""
    batching = me.spec.serving.batching if me.spec.serving is not None else BatchingSpec()
    cmd = [
        "modelengine",
        "serve",
        "--store",
        me.spec.storage.uri,
        "--namespace",
        me.metadata.namespace,
        "--name",
        me.metadata.name,
        "--http-port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--metrics-port",
        str(METRICS_PORT),
        "--cache-dir",
        "/tmp/engines",
    ]
    if me.spec.storage.endpoint_url:
        cmd += ["--s3-endpoint", me.spec.storage.endpoint_url]
    if batching.enabled:
        cmd += [
            "--max-batch-size",
            str(batching.max_batch_size),
            "--max-delay-ms",
            f"{batching.max_delay_ms:g}",
        ]
    else:
        cmd.append("--no-batching")
    return cmd


def _affinity(group: ServingGroup) -> dict[str, Any]:
    if group.kind is None:
        return required_affinity(cpu_terms())
    return required_affinity(gpu_terms(group.kind.compute_capability, group.kind.product))


def runtime_container(
    *, me: ModelEngine, image: str, requests: dict[str, str], limits: dict[str, str]
) -> dict[str, Any]:
    """The runtime sidecar container: `modelengine serve` with its ports, probes and credentials.

    Shared by the serving groups' Deployments and the injection webhook, so an injected
    sidecar is the same container the operator's own serving pods run.
    """
    env = [{"name": "HOME", "value": "/tmp"}]
    if me.spec.storage.region:
        env.append({"name": "AWS_REGION", "value": me.spec.storage.region})
    container: dict[str, Any] = {
        "name": "runtime",
        "image": image,
        "command": runtime_command(me),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security(),
        "volumeMounts": [{"name": RUNTIME_VOLUME, "mountPath": "/tmp"}],
    }
    if me.spec.storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": me.spec.storage.secret_ref.name}}]
    return container


def deployment(
    *, me: ModelEngine, uid: str | None, config: OperatorConfig, group: ServingGroup
) -> dict[str, Any]:
    """The apps/v1 Deployment of one serving group, pinned to its GPU kind (or CPU nodes)."""
    serving = _serving(me)
    resources = (group.overrides.resources if group.overrides else None) or serving.resources
    cpu = (resources.cpu if resources else None) or config.runtime_cpu
    memory = (resources.memory if resources else None) or config.runtime_memory
    requests = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    tolerations: list[dict[str, str]] = []
    if group.kind is not None:
        limits["nvidia.com/gpu"] = "1"
        tolerations.append(GPU_TOLERATION)
    container = runtime_container(
        me=me, image=serving.image or config.runtime_image, requests=requests, limits=limits
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(me, uid, group_name(me.metadata.name, group), group),
        "spec": {
            # No `replicas`: the HPA owns it; rendering it would make us fight the HPA.
            "selector": {"matchLabels": _selector(me, group)},
            # A new engine replaces pods only as fast as replacements turn ready; one that
            # fails acceptance stalls the rollout here and the old pods keep serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": _labels(me, group)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True},
                    "affinity": _affinity(group),
                    **({"tolerations": tolerations} if tolerations else {}),
                    "containers": [container],
                    "volumes": [{"name": RUNTIME_VOLUME, "emptyDir": {}}],
                },
            },
        },
    }


def service(*, me: ModelEngine, uid: str | None) -> dict[str, Any]:
    """ClusterIP Service over every group: `http` 8000 and `grpc` 8001 (KServe v2), `metrics` 8002."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(me, uid, serving_name(me.metadata.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(me),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"},
            ],
        },
    }


def autoscaler(*, me: ModelEngine, uid: str | None, group: ServingGroup) -> dict[str, Any]:
    """autoscaling/v2 HPA of one group: CPU utilisation, or a per-pod runtime metric."""
    serving = _serving(me)
    override = group.overrides
    scaling: AutoscalingSpec = (override.autoscaling if override else None) or serving.autoscaling
    low = override.min_replicas if override and override.min_replicas is not None else serving.min_replicas
    high = override.max_replicas if override and override.max_replicas is not None else serving.max_replicas
    if scaling.metric == "cpu":
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.target},
            },
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": POD_METRICS[scaling.metric]},
                "target": {"type": "AverageValue", "averageValue": str(scaling.target)},
            },
        }
    name = group_name(me.metadata.name, group)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(me, uid, name, group),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(low, 1),
            "maxReplicas": max(high, low, 1),
            "metrics": [metric],
        },
    }


def disruption_budget(*, me: ModelEngine, uid: str | None, group: ServingGroup) -> dict[str, Any]:
    """policy/v1 PDB: a node drain takes at most one pod of the group at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(me, uid, group_name(me.metadata.name, group), group),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(me, group)}},
    }


def render(
    *, me: ModelEngine, uid: str | None, config: OperatorConfig, groups: list[ServingGroup]
) -> list[dict[str, Any]]:
    """Every group's Deployment, HPA and PDB, then the Service (apply order)."""
    out: list[dict[str, Any]] = []
    for group in groups:
        out += [
            deployment(me=me, uid=uid, config=config, group=group),
            autoscaler(me=me, uid=uid, group=group),
            disruption_budget(me=me, uid=uid, group=group),
        ]
    if groups:
        out.append(service(me=me, uid=uid))
    return out


def contains(existing: Any, desired: Any) -> bool:
    """Whether `existing` already holds every field of `desired` (server defaults ignored).

    An empty list or map in `desired` matches a missing field: the API server drops empty
    collections from what it stores, so they would otherwise differ forever.
    """
    if isinstance(desired, (dict, list)) and not desired and not existing:
        return True
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(contains(existing.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(contains(e, d) for e, d in zip(existing, desired, strict=True))
        )
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(existing, str):
        return existing == str(desired)
    return bool(existing == desired)


def needs_update(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether applying `desired` would change `existing` (labels, owners and spec)."""
    meta = desired.get("metadata") or {}
    current = existing.get("metadata") or {}
    if not contains(current.get("labels") or {}, meta.get("labels") or {}):
        return True
    if meta.get("ownerReferences") and not contains(current.get("ownerReferences"), meta["ownerReferences"]):
        return True
    return not contains(existing.get("spec"), desired.get("spec"))
