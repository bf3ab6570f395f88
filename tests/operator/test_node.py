"""The test node runs pods as a kubelet would: nothing of the test's own, statuses a 1.36 server accepts."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.operator.harness import FakeCluster, kube_client, secret, wait_for
from tests.operator.node import TestNode

# What the container reports about its world: cwd contents, environment, mounts.
PROBE = """
import json, os, sys, tempfile
tmp = tempfile.mkdtemp()
report = {
    "cwd": os.getcwd(),
    "cwd_entries": sorted(os.listdir(".")),
    "env": dict(os.environ),
    "argv": sys.argv[1:],
    "tmp_under_volume": tmp.startswith(os.environ["TMPDIR"]),
}
open(os.environ["MESSAGE_PATH"], "w").write(json.dumps(report))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FakeCluster, Any, TestNode]]:
    cluster = FakeCluster(tmp_path)
    api = kube_client(cluster.kubeconfig)
    node = TestNode(api, poll=0.1)
    try:
        yield cluster, api, node
    finally:
        node.close()
        cluster.close()


def _job(
    name: str, env: list[dict[str, Any]], env_from: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "builder:1",
                            "command": ["python3", "-c", PROBE],
                            "args": ["$(GREETING)", "/tmp/out"],
                            "env": [
                                *env,
                                {"name": "MESSAGE_PATH", "value": "/dev/termination-log"},
                                {"name": "HOME", "value": "/tmp"},
                            ],
                            **({"envFrom": env_from} if env_from else {}),
                            "terminationMessagePath": "/dev/termination-log",
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def _pods(cluster: FakeCluster, job: str) -> list[dict[str, Any]]:
    return [p for p in cluster.objects("pods", "default") if p["metadata"]["labels"].get("job-name") == job]


def _finished(cluster: FakeCluster, name: str, node: TestNode) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = cluster.get("jobs", "default", name) or {}
        types = [c["type"] for c in (job.get("status") or {}).get("conditions") or []]
        return job if ("Complete" in types or "Failed" in types) else None

    job: dict[str, Any] = wait_for(done, 60, what=f"Job {name} finished", show=lambda: node.errors)
    return job


def test_a_job_pod_gets_only_its_spec(
    world: tuple[FakeCluster, Any, TestNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, api, _node = world
    monkeypatch.setenv("TEST_PROCESS_CANARY", "leaked")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-tests-own-credentials")
    core = client.CoreV1Api(api)
    core.create_namespaced_secret("default", secret("store", "default", {"AWS_ACCESS_KEY_ID": "from-secret"}))
    client.BatchV1Api(api).create_namespaced_job(
        "default",
        _job(
            "probe",
            [{"name": "GREETING", "value": "hello"}],
            [{"secretRef": {"name": "store"}, "prefix": "S_"}],
        ),
    )
    job = _finished(cluster, "probe", _node)
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert (
        job["status"]["succeeded"] == 1 and job["status"]["completionTime"] and "active" not in job["status"]
    )
    (pod,) = _pods(cluster, "probe")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded" and terminated["exitCode"] == 0
    report = json.loads(terminated["message"])  # the termination message, from terminationMessagePath
    assert report["cwd_entries"] == []  # a fresh, empty working directory
    assert set(report["env"]) == {"PATH", "LANG", "HOME", "TMPDIR", "GREETING", "MESSAGE_PATH", "S_AWS_ACCESS_KEY_ID"}
    assert report["env"]["S_AWS_ACCESS_KEY_ID"] == "from-secret"  # envFrom, base64-decoded, prefixed
    assert report["env"]["HOME"] == report["env"]["TMPDIR"] != "/tmp"  # /tmp is the emptyDir, rewritten
    assert report["tmp_under_volume"] is True
    assert report["argv"] == ["hello", report["env"]["TMPDIR"] + "/out"]  # $(VAR) expansion, path rewrite
    assert not report["cwd"].startswith(os.getcwd())


def test_a_failing_job_reports_its_message_and_fails_in_order(
    world: tuple[FakeCluster, Any, TestNode],
) -> None:
    cluster, api, node = world
    client.BatchV1Api(api).create_namespaced_job(
        "default", _job("fails", [{"name": "GREETING", "value": "x"}, {"name": "EXIT_CODE", "value": "3"}])
    )
    job = _finished(cluster, "fails", node)
    assert [c["type"] for c in job["status"]["conditions"]] == ["FailureTarget", "Failed"]
    assert job["status"]["failed"] == 1 and node.finished[("default", "fails")] == 3
    (pod,) = _pods(cluster, "fails")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert json.loads(terminated["message"])["env"]["EXIT_CODE"] == "3"


def test_a_missing_secret_keeps_the_pod_waiting_until_it_exists(
    world: tuple[FakeCluster, Any, TestNode],
) -> None:
    cluster, api, _node = world
    client.BatchV1Api(api).create_namespaced_job(
        "default", _job("waits", [{"name": "GREETING", "value": "x"}], [{"secretRef": {"name": "later"}}])
    )

    def waiting() -> Any:
        pods = _pods(cluster, "waits")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses and statuses[0]["state"].get("waiting")

    state = wait_for(waiting, 30, what="CreateContainerConfigError")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    client.CoreV1Api(api).create_namespaced_secret("default", secret("later", "default", {"K": "v"}))
    job = _finished(cluster, "waits", _node)
    assert job["status"]["conditions"][-1]["type"] == "Complete"
    assert len(_pods(cluster, "waits")) == 1  # the same pod, retried


def test_a_serving_pod_is_started_probed_and_reachable(world: tuple[FakeCluster, Any, TestNode]) -> None:
    cluster, api, node = world
    labels = {"app": "web"}
    container = {
        "name": "web",
        "image": "runtime:1",
        "command": ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )

    def ready() -> bool:
        status = (cluster.get("deployments", "default", "web") or {}).get("status") or {}
        return status.get("readyReplicas") == 1

    wait_for(ready, 30, what="Deployment ready", show=lambda: node.serving_log("default", "web"))
    port = node.serving_port("default", "web", 8000)
    assert port != 8000
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.status == 200
    (pod,) = [p for p in cluster.objects("pods", "default") if p["metadata"]["labels"].get("app") == "web"]
    assert {"type": "Ready", "status": "True"} in [
        {k: c[k] for k in ("type", "status")} for c in pod["status"]["conditions"]
    ]
    client.AppsV1Api(api).delete_namespaced_deployment("web", "default")
    wait_for(lambda: ("default", "web") not in node.serving, 30, what="serving pod stopped")
