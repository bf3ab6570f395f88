"""The builder Jobs' informer against the fake API over TLS: list, watch, resume, stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes import client

from modelengine.operator.job_watch import JobWatch
from modelengine.operator.kube_client import ClientApi
from modelengine.operator.workqueue import Key
from tests.operator.harness import FakeCluster, kube_client

SELECTOR = "modelengine.io/build-key"


def _job(name: str, *, builder: bool = True) -> dict[str, Any]:
    labels = {SELECTOR: f"key-{name}"} if builder else {"app": "other"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox:1", "command": ["true"]}],
                }
            }
        },
    }


class Recorder:
    """What `observe` was told, and a cache like the informers' (key → slim Job)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.cache: dict[Key, dict[str, Any]] = {}

    def observe(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.events.append((kind, meta["name"]))
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = body


async def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


Body = Callable[[JobWatch, client.BatchV1Api], Awaitable[None]]


def _watching(
    cluster: FakeCluster,
    recorder: Recorder,
    body: Body,
    *,
    wrap: Callable[[ClientApi, client.BatchV1Api], Any] | None = None,
    timeout_seconds: int = 300,
    restarts: list[str] | None = None,
) -> None:
    """Run a JobWatch of `default` (its API optionally wrapped) around `body`, then stop it."""
    api = ClientApi(kubeconfig=str(cluster.kubeconfig))
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))

    async def main() -> None:
        watch = JobWatch(
            api=wrap(api, batch) if wrap else api,
            namespaces=["default"],
            label_selector=SELECTOR,
            observe=recorder.observe,
            known=lambda: recorder.cache,
            retry_seconds=0.1,
            timeout_seconds=timeout_seconds,
            on_restart=(restarts if restarts is not None else []).append,
        )
        task = asyncio.create_task(watch.run())
        try:
            await asyncio.wait_for(watch.synced.wait(), 10)
            await body(watch, batch)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        api.close()


def test_lists_then_watches_only_builder_jobs(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    batch.create_namespaced_job("default", _job("before"))
    batch.create_namespaced_job("default", _job("unrelated", builder=False))
    recorder = Recorder()

    async def body(watch: JobWatch, batch: client.BatchV1Api) -> None:
        assert recorder.events == [("ADDED", "before")]  # listed before `synced`
        await asyncio.to_thread(batch.create_namespaced_job, "default", _job("after"))
        await asyncio.to_thread(batch.create_namespaced_job, "default", _job("other", builder=False))
        await asyncio.to_thread(
            batch.patch_namespaced_job, "before", "default", {"metadata": {"annotations": {"a": "b"}}}
        )
        await asyncio.to_thread(batch.delete_namespaced_job, "after", "default")
        await _until(lambda: ("DELETED", "after") in recorder.events, "the deletion")

    _watching(cluster, recorder, body)
    builder_events = [e for e in recorder.events if e[1] in ("before", "after")]
    assert builder_events[:1] == [("ADDED", "before")]
    assert ("ADDED", "after") in builder_events and ("MODIFIED", "before") in builder_events
    assert builder_events[-1] == ("DELETED", "after")
    assert not any(name in ("unrelated", "other") for _, name in recorder.events)
    assert set(recorder.cache) == {("default", "before")}
    # Slim copies: reconcile never reads a Job's pod template.
    assert "template" not in recorder.cache[("default", "before")]["spec"]


def test_a_job_deleted_while_unwatched_is_reported_deleted(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    batch.create_namespaced_job("default", _job("alive"))
    recorder = Recorder()
    ghost = {"metadata": {"namespace": "default", "name": "ghost", "labels": {SELECTOR: "k"}}}
    recorder.cache[("default", "ghost")] = ghost  # cached by an earlier list, gone since

    async def body(watch: JobWatch, batch: client.BatchV1Api) -> None:
        return None

    _watching(cluster, recorder, body)
    assert ("DELETED", "ghost") in recorder.events
    assert set(recorder.cache) == {("default", "alive")}


def test_stopping_ends_the_watch_thread(cluster: FakeCluster) -> None:
    recorder = Recorder()

    async def body(watch: JobWatch, batch: client.BatchV1Api) -> None:
        await _until(
            lambda: any(t.name.startswith("job-watch-") for t in threading.enumerate()), "the watch thread"
        )

    started = time.monotonic()
    _watching(cluster, recorder, body)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("job-watch-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the watch thread outlived its stop"
        time.sleep(0.05)
    assert time.monotonic() - started < 15


class StaleResume:
    """The real client, counting calls; with `stale`, its first WATCH resumes from a version
    the server no longer holds, after a Job was deleted and another created unseen (as
    after a long outage)."""

    def __init__(self, api: ClientApi, batch: client.BatchV1Api, *, stale: bool = True) -> None:
        self.api, self.batch, self.stale = api, batch, stale
        self.lists = 0
        self.watches: list[str] = []

    async def list_jobs(self, *args: Any, **kwargs: Any) -> Any:
        self.lists += 1
        return await self.api.list_jobs(*args, **kwargs)

    def watch_jobs(self, namespace: str | None, selector: str, version: str, timeout: int) -> Any:
        if self.stale and not self.watches:
            self.batch.delete_namespaced_job("gone", "default")
            self.batch.create_namespaced_job("default", _job("new"))
            version = "1"
        self.watches.append(version)
        return self.api.watch_jobs(namespace, selector, version, timeout)


def test_an_expired_resume_point_lists_again_and_reports_what_changed_unseen(cluster: FakeCluster) -> None:
    cluster.inject(lambda k: setattr(k, "watch_history", 2))
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    for name in ("kept", "gone", "filler-1", "filler-2", "filler-3"):
        batch.create_namespaced_job("default", _job(name))
    recorder = Recorder()
    wrapped: list[StaleResume] = []

    def wrap(api: ClientApi, batch: client.BatchV1Api) -> StaleResume:
        wrapped.append(StaleResume(api, batch))
        return wrapped[0]

    async def body(watch: JobWatch, batch: client.BatchV1Api) -> None:
        stale = wrapped[0]
        await _until(lambda: stale.lists == 2 and len(stale.watches) == 2, "the re-list after 410")
        await _until(lambda: ("DELETED", "gone") in recorder.events, "the unseen deletion")

    restarts: list[str] = []
    _watching(cluster, recorder, body, wrap=wrap, restarts=restarts)
    assert restarts == ["expired"]  # counted (modelengine_job_watch_restarts_total)
    stale = wrapped[0]
    assert stale.watches[0] == "1" and stale.watches[1] != "1"  # resumed from the new list
    assert ("ADDED", "new") in recorder.events
    assert {name for _, name in recorder.cache} == {"kept", "new", "filler-1", "filler-2", "filler-3"}


def test_a_watch_the_server_ends_resumes_where_it_stopped(cluster: FakeCluster) -> None:
    recorder = Recorder()
    wrapped: list[StaleResume] = []

    def wrap(api: ClientApi, batch: client.BatchV1Api) -> StaleResume:
        wrapped.append(StaleResume(api, batch, stale=False))
        return wrapped[0]

    async def body(watch: JobWatch, batch: client.BatchV1Api) -> None:
        await _until(lambda: len(wrapped[0].watches) >= 2, "the second watch")
        await asyncio.to_thread(batch.create_namespaced_job, "default", _job("later"))
        await _until(lambda: ("ADDED", "later") in recorder.events, "the Job made after a resume")

    restarts: list[str] = []
    _watching(cluster, recorder, body, wrap=wrap, timeout_seconds=1, restarts=restarts)
    assert wrapped[0].lists == 1 and restarts == []  # resumed from its version: routine, no re-list
    assert recorder.events == [("ADDED", "later")]
