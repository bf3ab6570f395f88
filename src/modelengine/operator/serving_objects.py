"""`spec.serving`: the inference Deployment, Service and HorizontalPodAutoscaler.

Pure functions only: each renders one manifest from the ModelEngine, the operator's
configuration and the backends of the released engines; the controller applies them.
Every pod runs the runtime sidecar (`modelengine serve`), which reads the release record
`releases/<namespace>/<name>.json` and picks the engine for the GPU it finds.

Placement is deliberately simple: the pods ask for `nvidia.com/gpu: 1` (and tolerate the
GPU taint) when every released engine needs a GPU; as soon as one CPU engine (ONNX
Runtime on CPU) is in the release they run on CPU nodes. The selector is the ModelEngine's
name label only, so it never changes (a Deployment's selector is immutable).

`needs_update` compares only the fields we render: the API server adds defaults
(strategy, terminationMessagePath, clusterIP, ...) that must not count as differences,
otherwise every reconcile would write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelengine.api.models import API_GROUP, API_VERSION, KIND, ModelEngine, ServingSpec
from modelengine.api.targets import ResolvedTarget
from modelengine.operator.build_jobs import LABEL_MANAGED, LABEL_NAME, MANAGED_BY
from modelengine.operator.config import OperatorConfig
from modelengine.operator.names import dns_label, label_value

HTTP_PORT = 8000
METRICS_PORT = 8002
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "runtime"
RUNTIME_CPU = "1"
RUNTIME_MEMORY = "2Gi"
# Per-pod custom metrics the HPA reads through a Prometheus adapter (see docs/operator.md).
POD_METRICS = {
    "inflight": "modelengine_runtime_inflight_requests",
    "rps": "modelengine_runtime_requests_per_second",
}


def serving_name(name: str) -> str:
    """A DNS-1035 label (Service names need one) derived from the ModelEngine's name."""
    return dns_label(name, suffix="-runtime")


def wants_gpu(targets: Iterable[ResolvedTarget]) -> bool:
    """GPU pods only when every released engine is a GPU engine (none runs on CPU)."""
    listed = list(targets)
    return bool(listed) and all(t.is_gpu for t in listed)


def _labels(me: ModelEngine) -> dict[str, str]:
    return {
        LABEL_NAME: label_value(me.metadata.name),
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED: MANAGED_BY,
    }


def _selector(me: ModelEngine) -> dict[str, str]:
    return {LABEL_NAME: label_value(me.metadata.name), LABEL_COMPONENT: COMPONENT}


def _metadata(me: ModelEngine, uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": serving_name(me.metadata.name),
        "namespace": me.metadata.namespace,
        "labels": _labels(me),
    }
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
    serving = _serving(me)
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
        "--metrics-port",
        str(METRICS_PORT),
        "--cache-dir",
        "/tmp/engines",
    ]
    if me.spec.storage.endpoint_url:
        cmd += ["--s3-endpoint", me.spec.storage.endpoint_url]
    if serving.batching.enabled:
        cmd += [
            "--max-batch-size",
            str(serving.batching.max_batch_size),
            "--max-delay-ms",
            f"{serving.batching.max_delay_ms:g}",
        ]
    else:
        cmd.append("--no-batching")
    return cmd


def deployment(
    *, me: ModelEngine, uid: str | None, config: OperatorConfig, targets: Iterable[ResolvedTarget]
) -> dict[str, Any]:
    """The apps/v1 Deployment whose pods run the runtime sidecar."""
    serving = _serving(me)
    gpu = wants_gpu(targets)
    requests = {"cpu": RUNTIME_CPU, "memory": RUNTIME_MEMORY}
    limits: dict[str, str] = {"memory": RUNTIME_MEMORY}
    tolerations: list[dict[str, str]] = []
    if gpu:
        limits["nvidia.com/gpu"] = "1"
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    env = [{"name": "HOME", "value": "/tmp"}]
    if me.spec.storage.region:
        env.append({"name": "AWS_REGION", "value": me.spec.storage.region})
    container: dict[str, Any] = {
        "name": "runtime",
        "image": serving.image or config.runtime_image,
        "command": runtime_command(me),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
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
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if me.spec.storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": me.spec.storage.secret_ref.name}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(me, uid),
        "spec": {
            # No `replicas`: the HPA owns it; rendering it would make us fight the HPA.
            "selector": {"matchLabels": _selector(me)},
            "template": {
                "metadata": {"labels": _labels(me)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True},
                    **({"tolerations": tolerations} if tolerations else {}),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(*, me: ModelEngine, uid: str | None) -> dict[str, Any]:
    """ClusterIP Service: `http` 8000 (KServe v2) and `metrics` 8002."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(me, uid),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(me),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"},
            ],
        },
    }


def autoscaler(*, me: ModelEngine, uid: str | None) -> dict[str, Any]:
    """autoscaling/v2 HPA: CPU utilisation, or a per-pod runtime metric (Prometheus adapter)."""
    serving = _serving(me)
    scaling = serving.autoscaling
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
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(me, uid),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": serving_name(me.metadata.name),
            },
            "minReplicas": max(serving.min_replicas, 1),
            "maxReplicas": max(serving.max_replicas, serving.min_replicas, 1),
            "metrics": [metric],
        },
    }


def render(
    *, me: ModelEngine, uid: str | None, config: OperatorConfig, targets: Iterable[ResolvedTarget]
) -> list[dict[str, Any]]:
    """The three objects, in apply order (Deployment, Service, HPA)."""
    return [
        deployment(me=me, uid=uid, config=config, targets=targets),
        service(me=me, uid=uid),
        autoscaler(me=me, uid=uid),
    ]


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
