"""The operator's API client reuses its pooled TLS connections (counted on the server side)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from modelengine.operator.kube_client import ClientApi
from tests.operator.harness import FakeCluster, kube_client

AGENT = "connection-test"


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox:1", "command": ["true"]}],
                }
            }
        },
    }


def test_the_api_is_served_over_tls(cluster: FakeCluster) -> None:
    assert cluster.url.startswith("https://")
    insecure = client.Configuration()
    insecure.host = cluster.url
    insecure.verify_ssl = True  # and no CA: the throwaway CA is trusted only through the kubeconfig
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        client.CoreV1Api(client.ApiClient(insecure)).list_node(_request_timeout=5)


def test_writes_reuse_pooled_connections(cluster: FakeCluster) -> None:
    workers = 4
    api = ClientApi(kubeconfig=str(cluster.kubeconfig), user_agent=AGENT, workers=workers)

    async def many() -> None:
        for i in range(20):  # one after another
            await api.create_job("default", _job(f"seq-{i}"))
        await asyncio.gather(*(api.create_job("default", _job(f"par-{i}")) for i in range(40)))
        await asyncio.gather(*(api.delete_job("default", f"par-{i}") for i in range(40)))
        for _ in range(10):
            await api.read_secret("default", "missing")  # 404s release too

    try:
        asyncio.run(many())
    finally:
        api.close()
    writes = [r for r in cluster.requests() if r.headers.get("User-Agent", "") == AGENT]
    assert len(writes) == 110
    assert 1 <= cluster.connections.opened_by((AGENT,)) <= workers


def test_unreleased_responses_open_a_connection_each(cluster: FakeCluster) -> None:
    """The counter sees the defect the client avoids: raw responses never read or released."""
    api_client = kube_client(cluster.kubeconfig)
    api_client.user_agent = "leaky-client"
    batch = client.BatchV1Api(api_client)
    held = [
        batch.create_namespaced_job("default", _job(f"leak-{i}"), _preload_content=False) for i in range(12)
    ]
    assert cluster.connections.opened_by(("leaky-client",)) == 12
    for response in held:
        response.release_conn()


def test_lists_are_read_in_pages_and_transformed_as_they_arrive(cluster: FakeCluster) -> None:
    from modelengine.operator import kube_client as client_module

    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    for i in range(7):
        batch.create_namespaced_job("default", _job(f"page-{i}"))
    api = ClientApi(kubeconfig=str(cluster.kubeconfig), user_agent=AGENT)
    seen: list[str] = []

    def slim(job: dict[str, Any]) -> dict[str, Any]:
        seen.append(job["metadata"]["name"])
        return {"metadata": {"name": job["metadata"]["name"]}}

    old_page, client_module.LIST_PAGE = client_module.LIST_PAGE, 3
    try:
        jobs, version = asyncio.run(api.list_jobs("default", "app=t", transform=slim))
    finally:
        client_module.LIST_PAGE = old_page
        api.close()
    assert [j["metadata"]["name"] for j in jobs] == [f"page-{i}" for i in range(7)] == seen
    assert version.isdigit(), version  # where a watch of the same Jobs resumes
    lists = [
        r for r in cluster.requests() if r.headers.get("User-Agent") == AGENT and r.method.value == "GET"
    ]
    assert [r.url.query.get("limit") for r in lists] == ["3", "3", "3"]
    assert [bool(r.url.query.get("continue")) for r in lists] == [False, True, True]
