"""kopf with `EventsOnlyDiffBase`: event handlers still see every event; changing handlers are refused."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf
import pytest
from kubernetes import client

from modelengine.operator.kube_client import ClientApi
from modelengine.operator.run import connection_info
from modelengine.operator.slim import EventsOnlyDiffBase, check_event_only
from tests.operator.harness import FakeCluster, kube_client, wait_for


def _job(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "i:1", "command": ["x"]}],
                }
            }
        },
    }


def test_event_handlers_see_every_event_with_no_essence_kept(cluster: FakeCluster) -> None:
    seen: list[tuple[str, str]] = []
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = EventsOnlyDiffBase()
        settings.posting.enabled = False

    @kopf.on.event("batch", "v1", "jobs", registry=registry)
    async def job_event(type: str, body: kopf.Body, **_: Any) -> None:
        seen.append((str(type), body["metadata"]["name"]))

    api = ClientApi(kubeconfig=str(cluster.kubeconfig))
    login = connection_info(api)

    @kopf.on.login(registry=registry)
    def do_login(**_: Any) -> kopf.ConnectionInfo:
        return login

    check_event_only(registry)
    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(
                registry=registry, clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready
            )
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(30)

        def watching() -> bool:
            return any(
                r.url.path == "/apis/batch/v1/jobs" and r.url.query.get("watch") == "true"
                for r in cluster.requests()
            )

        wait_for(watching, 30, what="kopf's Job watch")
        batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
        batch.create_namespaced_job("default", _job("a"))
        batch.patch_namespaced_job("a", "default", {"metadata": {"labels": {"app": "u"}}})
        batch.delete_namespaced_job("a", "default")
        wait_for(lambda: ("DELETED", "a") in seen, 30, what="the DELETED event", show=lambda: seen)
        assert [t for t, n in seen if n == "a"] == ["ADDED", "MODIFIED", "DELETED"]
        # kopf wrote nothing of its own (no last-handled-configuration annotation, no status).
        writes = [r for r in cluster.requests() if r.headers.get("User-Agent", "").startswith("kopf/")]
        assert all(str(getattr(r.method, "value", r.method)).upper() == "GET" for r in writes)
    finally:
        stop.set()
        thread.join(30)
        api.close()


def test_changing_handlers_are_refused() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.create("batch", "v1", "jobs", registry=registry, id="create-job")
    async def create(**_: Any) -> None: ...

    with pytest.raises(ValueError, match="changing handlers: create-job"):
        check_event_only(registry)
    assert EventsOnlyDiffBase().build(body=kopf.Body({"spec": {"a": 1}})) == {}
