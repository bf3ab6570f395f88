"""The builder Job: one per build key, named after the key, pinned to the right nodes.

The name is a pure function of the build key (`me-build-<key[:20]>`), so a restarted
operator, a second replica or two ModelEngines sharing a model can never start the same
build twice: the second create answers 409 and the caller adopts the existing Job.

Placement follows the backend: full TensorRT builds for the GPU they target, so the Job
asks for `nvidia.com/gpu: 1`, tolerates the GPU taint and requires GFD's compute-capability
labels (and the product when the spec pins one). TRT-RTX and ONNX Runtime build on CPUs:
no GPU request, and an affinity away from GPU nodes so builds do not take them.
Store credentials reach the pod only through `envFrom` of the referenced Secret.
"""

from __future__ import annotations

import json
from typing import Any

from modelengine.api.models import API_GROUP, API_VERSION, KIND, ModelEngine
from modelengine.api.targets import ResolvedTarget
from modelengine.operator.config import OperatorConfig
from modelengine.operator.names import label_value
from modelengine.operator.pod_parts import (
    GPU_TOLERATION,
    TMP_MOUNT,
    TMP_VOLUME,
    container_security,
    cpu_terms,
    gpu_terms,
    required_affinity,
)

LABEL_NAME = "modelengine.io/name"
LABEL_KEY = "modelengine.io/build-key"
LABEL_TARGET = "modelengine.io/target"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelengine-operator"
TERMINATION_LOG = "/dev/termination-log"


def job_name(build_key: str) -> str:
    return f"me-build-{build_key[:20]}"


def resource_json(me: ModelEngine, generation: int) -> str:
    """The ModelEngine as the builder reads it: no status, only the metadata it needs."""
    doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": me.metadata.name, "namespace": me.metadata.namespace, "generation": generation},
        "spec": me.spec.to_wire(),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def target_json(target: ResolvedTarget) -> str:
    return json.dumps(
        {
            "backend": target.backend.value,
            "computeCapability": target.compute_capability,
            "product": target.product,
        },
        separators=(",", ":"),
    )


def _affinity(target: ResolvedTarget) -> dict[str, Any]:
    if target.needs_gpu_node and target.compute_capability:
        return required_affinity(gpu_terms(target.compute_capability, target.product))
    return required_affinity(cpu_terms())


def build_job(
    *,
    me: ModelEngine,
    uid: str | None,
    generation: int,
    target: ResolvedTarget,
    build_key: str,
    config: OperatorConfig,
) -> dict[str, Any]:
    """The batch/v1 Job manifest that builds `target` of `me` under `build_key`."""
    return _job(
        me=me,
        uid=uid,
        name=job_name(build_key),
        labels={LABEL_KEY: label_value(build_key), LABEL_TARGET: label_value(target.name)},
        env=[
            {"name": "MODELENGINE_RESOURCE", "value": resource_json(me, generation)},
            {"name": "MODELENGINE_TARGET", "value": target_json(target)},
            {"name": "MODELENGINE_BUILD_KEY", "value": build_key},
            # The version the key was planned with: a builder image with another refuses.
            *(
                [{"name": "MODELENGINE_BACKEND_VERSION", "value": version}]
                if (version := config.backend_version(target.backend))
                else []
            ),
        ],
        command=list(config.builder_command),
        gpu=target.needs_gpu_node,
        affinity=_affinity(target),
        config=config,
    )


def resolve_key(identity: str) -> str:
    """The build-key label of a resolve Job: its users are woken like a build's."""
    return f"resolve-{identity[:32]}"


def resolve_job_name(identity: str) -> str:
    return f"me-resolve-{identity[:20]}"


def resolve_job(
    *, me: ModelEngine, uid: str | None, generation: int, identity: str, config: OperatorConfig
) -> dict[str, Any]:
    """The CPU Job that hashes the model source, exports its ONNX once and records both.

    Named after the source's identity, so every ModelEngine of one model (same bytes,
    same export recipe) shares one resolve Job.
    """
    return _job(
        me=me,
        uid=uid,
        name=resolve_job_name(identity),
        labels={LABEL_KEY: resolve_key(identity), LABEL_TARGET: "resolve"},
        env=[{"name": "MODELENGINE_RESOURCE", "value": resource_json(me, generation)}],
        command=[*config.builder_command, "--resolve"],
        gpu=False,
        affinity=required_affinity(cpu_terms()),
        config=config,
    )


def _job(
    *,
    me: ModelEngine,
    uid: str | None,
    name: str,
    labels: dict[str, str],
    env: list[dict[str, str]],
    command: list[str],
    gpu: bool,
    affinity: dict[str, Any],
    config: OperatorConfig,
) -> dict[str, Any]:
    labels = {LABEL_NAME: label_value(me.metadata.name), **labels, LABEL_MANAGED: MANAGED_BY}
    limits: dict[str, str] = {"cpu": config.builder_cpu, "memory": config.builder_memory}
    requests = dict(limits)
    tolerations: list[dict[str, str]] = []
    if gpu:
        limits["nvidia.com/gpu"] = "1"
        tolerations.append(GPU_TOLERATION)
    container: dict[str, Any] = {
        "name": "builder",
        "image": me.spec.build.image or config.builder_image,
        "command": command,
        "env": [
            *env,
            {"name": "MODELENGINE_TERMINATION_LOG", "value": TERMINATION_LOG},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": {"limits": limits, "requests": requests},
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": container_security(),
        "volumeMounts": [TMP_MOUNT],
    }
    secret = me.spec.storage.secret_ref
    if secret is not None:
        container["envFrom"] = [{"secretRef": {"name": secret.name}}]
    metadata: dict[str, Any] = {"name": name, "namespace": me.metadata.namespace, "labels": labels}
    if uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": me.metadata.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "activeDeadlineSeconds": config.job_deadline_seconds,
            "backoffLimit": config.job_backoff_limit,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True},
                    "affinity": affinity,
                    **({"tolerations": tolerations} if tolerations else {}),
                    "containers": [container],
                    "volumes": [TMP_VOLUME],
                },
            },
        },
    }


def job_state(job: dict[str, Any]) -> str:
    """'Succeeded', 'Failed' or 'Running' from a Job's status (conditions first, then counts)."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    if status.get("succeeded"):
        return "Succeeded"
    backoff = int((job.get("spec") or {}).get("backoffLimit", 6))
    if int(status.get("failed") or 0) > backoff:
        return "Failed"
    return "Running"


def job_failure_reason(job: dict[str, Any]) -> str:
    """Kubernetes' own reason (BackoffLimitExceeded, DeadlineExceeded): the fallback only."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            message = cond.get("message") or cond.get("reason") or "failed"
            return f"Job failed: {message}"
    return "Job failed"
