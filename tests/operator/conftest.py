"""Fixtures for the operator's end-to-end tests: one fake cluster + S3 + test node per module.

The cluster (KMock), the bucket (moto) and the node are shared by a module's tests so that
engines built by one scenario serve the cache-hit scenarios after it; every test starts
its own operator (cheap) and uses its own ModelEngine names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelengine.operator.config import OperatorConfig
from tests.operator.harness import FakeCluster, OperatorThread, gpu_node, kube_client, secret
from tests.operator.node import TestNode

TINY_MODEL = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def make() -> torch.nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def broken() -> torch.nn.Module:
    raise RuntimeError("factory exploded: weights for layer fc are missing")
"""

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_REGION": "us-east-1",
}
NAMESPACE = "default"
CUSTOM_BUILDER_IMAGE = "registry.test/modelengine-builder-with-model:1"


@dataclass
class World:
    cluster: FakeCluster
    custom: Any
    core: Any
    batch: Any
    node: TestNode
    model_dir: Path
    endpoint: str
    bucket: str

    def modelengine(
        self,
        name: str,
        *,
        entrypoint: str = "tiny:make",
        targets: list[dict[str, Any]] | None = None,
        opt: int = 4,
        **spec: Any,
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                # A model baked into a custom builder image: the test node lets only that
                # image's pods read model_dir (s3:// sources: test_cluster_path).
                "model": {"source": self.model_dir.as_uri(), "format": "python", "entrypoint": entrypoint},
                "export": {
                    "inputs": [
                        {"name": "x", "shape": [-1, 8], "min": [1, 8], "opt": [opt, 8], "max": [16, 8]}
                    ]
                },
                "build": {"backend": "tensorrt-rtx", "image": CUSTOM_BUILDER_IMAGE},
                "targets": targets or [{"auto": True}],
                "storage": {
                    "uri": f"s3://{self.bucket}/store",
                    "endpointUrl": self.endpoint,
                    "secretRef": {"name": "store-credentials"},
                },
            },
        }
        build = {**doc["spec"]["build"], **spec.pop("build", {})}
        doc["spec"].update(spec, build=build)
        return doc

    def apply(self, doc: dict[str, Any]) -> None:
        name = doc["metadata"]["name"]
        if self.cluster.get("modelengines", NAMESPACE, name) is None:
            self.custom.create_namespaced_custom_object(
                "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", doc
            )
        else:
            self.custom.patch_namespaced_custom_object(
                "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", name, {"spec": doc["spec"]}
            )

    def delete(self, name: str) -> None:
        """Delete a ModelEngine and, as Kubernetes' garbage collector would, the Jobs it owns."""
        obj = self.cluster.get("modelengines", NAMESPACE, name)
        self.custom.delete_namespaced_custom_object(
            "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", name
        )
        uid = (obj or {}).get("metadata", {}).get("uid")
        for job in self.jobs():
            if uid in [o.get("uid") for o in job["metadata"].get("ownerReferences") or []]:
                self.batch.delete_namespaced_job(job["metadata"]["name"], NAMESPACE)

    def status(self, name: str) -> dict[str, Any]:
        obj = self.cluster.get("modelengines", NAMESPACE, name) or {}
        return obj.get("status") or {}

    def jobs(self, name: str | None = None, *, resolve: bool = False) -> list[dict[str, Any]]:
        """The builder Jobs (of ModelEngine `name`); `resolve=True`: the resolve Jobs instead."""
        jobs = [
            j
            for j in self.cluster.objects("jobs", NAMESPACE)
            if j["metadata"]["name"].startswith("me-resolve-") == resolve
        ]
        if name is not None:
            jobs = [
                j
                for j in jobs
                if j["metadata"]["labels"].get("modelengine.io/name") == name
                or any(o.get("name") == name for o in j["metadata"].get("ownerReferences") or [])
            ]
        return jobs

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.cluster.objects("events", NAMESPACE)
            if e.get("involvedObject", {}).get("name") == name
        ]

    def operator(self, *, kubeconfig: Path | None = None, **kwargs: Any) -> OperatorThread:
        """An operator on this cluster, as admin unless `kubeconfig` is another identity's
        (e.g. `FakeCluster.chart_kubeconfig`: the chart's ServiceAccount and RBAC)."""
        options = dict(kwargs.pop("options", {}))
        options.setdefault("identity", f"test-operator-{uuid.uuid4().hex[:6]}")
        options.setdefault("retry_seconds", 0.5)
        options.setdefault("max_retry_seconds", 2.0)
        options.setdefault("backend_versions", {"tensorrt": "10.13.0"})
        return OperatorThread(kubeconfig or self.cluster.kubeconfig, OperatorConfig(**options), **kwargs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """A fresh fake API server over TLS, closed after the test."""
    c = FakeCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def world(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import boto3

    tmp = tmp_path_factory.mktemp("operator-e2e")
    model_dir = tmp / "model"
    model_dir.mkdir()
    (model_dir / "tiny.py").write_text(TINY_MODEL)
    bucket = f"me-op-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)
    cluster = FakeCluster(tmp)
    api = kube_client(cluster.kubeconfig)
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(NAMESPACE, secret("store-credentials", NAMESPACE, CREDENTIALS))
    for node_doc in (
        gpu_node("gpu-a100-0", "NVIDIA-A100-SXM4-80GB", "8.0"),
        gpu_node("gpu-l4-0", "NVIDIA-L4", "8.9", family="ada-lovelace"),
        gpu_node("gpu-l4-1", "NVIDIA-L4", "8.9", family="ada-lovelace"),
        gpu_node("gpu-a10-0", "NVIDIA-A10", "8.6"),
        gpu_node("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", "9.0", family="hopper"),
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "cpu-0", "labels": {"kubernetes.io/os": "linux"}},
        },
    ):
        core.create_node(node_doc)
    # Only pods of the custom builder image (World.modelengine's) hold the model's files.
    test_node = TestNode(api, images={CUSTOM_BUILDER_IMAGE: [model_dir]})
    cluster.route_pod_proxy(test_node.proxy)
    try:
        yield World(
            cluster,
            client.CustomObjectsApi(api),
            core,
            client.BatchV1Api(api),
            test_node,
            model_dir,
            moto_server,
            bucket,
        )
    finally:
        test_node.close()
        cluster.close()
