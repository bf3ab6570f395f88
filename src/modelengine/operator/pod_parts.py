"""The pieces every pod the operator renders shares: placement, security, scratch space.

Builder Jobs, resolve Jobs and serving Deployments all run non-root with a read-only root
filesystem and a `/tmp` emptyDir, and are placed by GPU Feature Discovery labels: on a
GPU kind (compute capability, optionally the product) or away from GPU nodes.
"""

from __future__ import annotations

from typing import Any

from modelengine.operator import nodes

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,  # the image's numeric USER (the builder and runtime images: 10001)
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def gpu_terms(compute_capability: str, product: str | None) -> list[dict[str, Any]]:
    major, _, minor = compute_capability.partition(".")
    terms: list[dict[str, Any]] = [
        {"key": nodes.MAJOR, "operator": "In", "values": [major]},
        {"key": nodes.MINOR, "operator": "In", "values": [minor]},
    ]
    if product:
        terms.append({"key": nodes.PRODUCT, "operator": "In", "values": [product]})
    return terms


def cpu_terms() -> list[dict[str, Any]]:
    return [{"key": nodes.PRESENT, "operator": "DoesNotExist"}]


def required_affinity(terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": terms}]
            }
        }
    }
