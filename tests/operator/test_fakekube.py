"""The KMock extension behaves like a real API server where the operator relies on it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.operator.fakekube import selector_matches
from tests.operator.harness import FakeCluster, kube_client

GROUP, VERSION, PLURAL = "modelengine.io", "v1alpha1", "modelengines"


def _me(name: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelEngine",
        "metadata": {"name": name},
        "spec": {"a": 1},
    }


def test_namespaces_are_listed(cluster: FakeCluster) -> None:
    api = client.CoreV1Api(kube_client(cluster.kubeconfig))
    api.create_namespaced_secret("team-a", {"metadata": {"name": "s"}, "data": {}})
    names = [n.metadata.name for n in api.list_namespace().items]
    assert "default" in names and "team-a" in names


def test_metadata_is_maintained_and_generation_follows_spec_only(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    raw = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _me("x"), _preload_content=False
    )
    created = json.loads(raw.data)
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    after_status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "x", {"status": {"phase": "Ready"}}
    )
    assert after_status["metadata"]["generation"] == 1
    assert int(after_status["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert after_status["metadata"]["uid"] == meta["uid"]
    after_labels = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "x", {"metadata": {"labels": {"a": "b"}}}
    )
    assert after_labels["metadata"]["generation"] == 1
    after_spec = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "x", {"spec": {"a": 2}}
    )
    assert after_spec["metadata"]["generation"] == 2


def test_status_is_a_subresource(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("y"))
    out = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "y", {"status": {"phase": "Ready"}, "spec": {"a": 99}}
    )
    assert out["status"] == {"phase": "Ready"} and out["spec"] == {"a": 1}
    out = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "y", {"status": {"phase": "Failed"}}
    )
    assert out["status"] == {"phase": "Ready"}


def test_missing_objects_answer_404(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, "nope", {"status": {}}
        )
    assert err.value.status == 404


def test_label_selectors_filter_lists(cluster: FakeCluster) -> None:
    core = client.CoreV1Api(kube_client(cluster.kubeconfig))
    core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "p1", "labels": {"job-name": "a"}}, "spec": {"containers": []}},
        _preload_content=False,
    )
    core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "p2", "labels": {"job-name": "b"}}, "spec": {"containers": []}},
        _preload_content=False,
    )
    raw = core.list_namespaced_pod("default", label_selector="job-name=a", _preload_content=False)
    assert [p["metadata"]["name"] for p in json.loads(raw.data)["items"]] == ["p1"]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b,c", {"a": "b", "c": "x"}, True),
        ("a!=b", {"a": "b"}, False),
        ("!a", {"a": "b"}, False),
        ("a", {}, False),
    ],
)
def test_selector_terms(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_history_window_keeps_the_full_log(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path, history_limit=2)
    try:
        core = client.CoreV1Api(kube_client(cluster.kubeconfig))
        for i in range(10):
            core.create_node({"metadata": {"name": f"n{i}"}})
        assert len(cluster.requests()) == 10
        assert len(list(cluster.kmock)) <= 4
    finally:
        cluster.close()


# ---- what a real v1.36 server refuses, and what it stores ----


def _job(name: str, labels: dict[str, str] | None = None, **container: object) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {"app": "t"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [],
                    "containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"], **container}],
                }
            }
        },
    }


def _refusal(call: object) -> dict[str, object]:
    assert callable(call)
    with pytest.raises(ApiException) as err:
        call()
    assert err.value.status == 422
    body: dict[str, object] = json.loads(err.value.body)
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and body["code"] == 422
    return body


@pytest.mark.parametrize(
    ("labels", "detail"),
    [
        ({"modelengine.io/name": "a" * 64}, "must be no more than 63 characters"),
        (
            {"modelengine.io/name": "cut-at-63-"},
            "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'",
        ),
        ({"-bad-key": "v"}, "name part must consist of alphanumeric characters"),
    ],
)
def test_invalid_label_values_and_keys_are_refused_with_422(
    cluster: FakeCluster, labels: dict[str, str], detail: str
) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    body = _refusal(lambda: batch.create_namespaced_job("default", _job("j", labels)))
    assert str(body["message"]).startswith('Job.batch "j" is invalid: metadata.labels: Invalid value: ')
    assert detail in str(body["message"])
    assert body["details"] == {
        "name": "j",
        "group": "batch",
        "kind": "Job",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": str(body["message"]).split("metadata.labels: ", 1)[1],
                "field": "metadata.labels",
            }
        ],
    }
    assert cluster.get("jobs", "default", "j") is None


def test_a_label_value_of_63_characters_is_accepted(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    batch.create_namespaced_job("default", _job("j", {"modelengine.io/name": "a" * 63}))
    assert cluster.get("jobs", "default", "j") is not None


def test_job_names_must_fit_the_job_name_label(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    body = _refusal(lambda: batch.create_namespaced_job("default", _job("j" * 64)))
    assert "spec.template.labels" in str(body["message"]) and "no more than 63 characters" in str(
        body["message"]
    )


@pytest.mark.parametrize(
    ("kind", "name", "ok"),
    [
        ("secret", "a" * 253, True),
        ("secret", "a" * 254, False),
        ("secret", "Upper", False),
        ("secret", "dots.are-fine", True),
        ("service", "a" * 63, True),
        ("service", "a" * 64, False),
        ("service", "0starts-with-digit", False),
        ("service", "has.dot", False),
    ],
)
def test_names_follow_each_kinds_rule(cluster: FakeCluster, kind: str, name: str, ok: bool) -> None:
    core = client.CoreV1Api(kube_client(cluster.kubeconfig))

    def call() -> object:
        if kind == "secret":
            return core.create_namespaced_secret("default", {"metadata": {"name": name}})
        return core.create_namespaced_service(
            "default", {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}
        )

    if ok:
        call()
    else:
        body = _refusal(call)
        assert "metadata.name: Invalid value" in str(body["message"])


def test_objects_are_checked_against_the_kubernetes_schema(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    body = _refusal(
        lambda: batch.create_namespaced_job("default", _job("j", resources={"limit": {"cpu": "1"}}))
    )
    assert "'limit' was unexpected" in str(body["message"])
    apps = client.AppsV1Api(kube_client(cluster.kubeconfig))
    body = _refusal(
        lambda: apps.create_namespaced_deployment(
            "default", {"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}}
        )
    )
    assert "'selector' is a required property" in str(body["message"])


def test_a_deployment_is_stored_with_the_servers_defaults_and_without_empty_lists(
    cluster: FakeCluster,
) -> None:
    apps = client.AppsV1Api(kube_client(cluster.kubeconfig))
    template = {
        "metadata": {"labels": {"app": "d"}},
        "spec": {
            "tolerations": [],
            "containers": [
                {
                    "name": "c",
                    "image": "runtime:latest",
                    "env": [],
                    "ports": [{"containerPort": 8000}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000}},
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template},
        },
    )
    stored = cluster.get("deployments", "default", "d")
    assert stored is not None
    spec = stored["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"], spec["replicas"]) == (10, 600, 1)
    pod = spec["template"]["spec"]
    assert "tolerations" not in pod and pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["schedulerName"], pod["securityContext"]) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
        {},
    )
    (c,) = pod["containers"]
    assert "env" not in c and c["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"], c["imagePullPolicy"]) == (
        "/dev/termination-log",
        "File",
        "Always",
    )
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP" and c["readinessProbe"]["timeoutSeconds"] == 1


def test_a_job_gets_its_selector_and_job_name_labels(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    batch.create_namespaced_job("default", _job("j"))
    stored = cluster.get("jobs", "default", "j")
    assert stored is not None
    uid = stored["metadata"]["uid"]
    assert stored["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = stored["spec"]["template"]["metadata"]["labels"]
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "j"
    assert stored["spec"]["backoffLimit"] == 6 and "tolerations" not in stored["spec"]["template"]["spec"]


def _status(*conditions: str, **extra: object) -> dict[str, object]:
    return {
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            **extra,
            "conditions": [{"type": c, "status": "True"} for c in conditions],
        }
    }


def test_job_status_must_follow_the_job_controllers_order(cluster: FakeCluster) -> None:
    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    batch.create_namespaced_job("default", _job("ok"))
    batch.create_namespaced_job("default", _job("bad"))
    done = {"completionTime": "2026-01-01T00:01:00Z"}
    body = _refusal(lambda: batch.patch_namespaced_job_status("ok", "default", _status("Complete", **done)))
    assert "cannot set Complete=True condition without the SuccessCriteriaMet=true condition" in str(
        body["message"]
    )
    body = _refusal(lambda: batch.patch_namespaced_job_status("bad", "default", _status("Failed")))
    assert "cannot set Failed=True condition without the FailureTarget=true condition" in str(body["message"])
    batch.patch_namespaced_job_status("ok", "default", _status("SuccessCriteriaMet"))
    batch.patch_namespaced_job_status("ok", "default", _status("SuccessCriteriaMet", "Complete", **done))
    batch.patch_namespaced_job_status("bad", "default", _status("FailureTarget"))
    batch.patch_namespaced_job_status("bad", "default", _status("FailureTarget", "Failed"))
    stored = cluster.get("jobs", "default", "ok")
    assert stored is not None and [c["type"] for c in stored["status"]["conditions"]] == [
        "SuccessCriteriaMet",
        "Complete",
    ]


def test_the_test_nodes_status_writes_are_accepted(cluster: FakeCluster) -> None:
    from tests.operator.node import finished_job_statuses

    batch = client.BatchV1Api(kube_client(cluster.kubeconfig))
    for name, succeeded in (("s", True), ("f", False)):
        batch.create_namespaced_job("default", _job(name))
        for status in finished_job_statuses(succeeded=succeeded, started="2026-01-01T00:00:00Z"):
            batch.patch_namespaced_job_status(name, "default", {"status": status})
    assert cluster.get("jobs", "default", "s")["status"]["conditions"][-1]["type"] == "Complete"  # type: ignore[index]
    assert cluster.get("jobs", "default", "f")["status"]["conditions"][-1]["type"] == "Failed"  # type: ignore[index]


def test_new_nodes_are_tainted_not_ready(cluster: FakeCluster) -> None:
    core = client.CoreV1Api(kube_client(cluster.kubeconfig))
    core.create_node({"metadata": {"name": "n"}})
    node = cluster.get("nodes", None, "n")
    assert node is not None
    assert {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_objects_carry_managed_fields_per_manager_and_subresource(cluster: FakeCluster) -> None:
    api = kube_client(cluster.kubeconfig)
    api.user_agent = "modelengine-operator"
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job("default", _job("j", {"app": "t"}))
    node_api = kube_client(cluster.kubeconfig)
    node_api.user_agent = "test-node/1"
    client.BatchV1Api(node_api).patch_namespaced_job_status("j", "default", _status("SuccessCriteriaMet"))
    stored = cluster.get("jobs", "default", "j")
    assert stored is not None
    entries = {(e["manager"], e.get("subresource")): e for e in stored["metadata"]["managedFields"]}
    assert set(entries) == {("modelengine-operator", None), ("test-node", "status")}
    spec_fields = entries[("modelengine-operator", None)]["fieldsV1"]
    assert 'k:{"name":"c"}' in spec_fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert spec_fields["f:metadata"]["f:labels"] == {"f:app": {}}
    assert "f:conditions" in entries[("test-node", "status")]["fieldsV1"]["f:status"]


# ---- WATCH, as a real server's watch cache serves it ----


def _labelled(name: str, labels: dict[str, str], **meta: object) -> dict[str, object]:
    body = _me(name)
    body["metadata"] = {"name": name, "labels": labels, **meta}
    return body


def _watch(custom: Any, namespace: str = "default", **params: Any) -> Any:
    """Open a WATCH with the `kubernetes` client (which spells the flag `watch=True`)."""
    return custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        watch=True,
        _preload_content=False,
        _request_timeout=(10, 30),
        **params,
    )


def _events(response: Any) -> list[dict[str, Any]]:
    """Every event of a watch stream, read line by line until the server ends it."""
    try:
        return [json.loads(line) for line in iter_resp_lines(response) if line.strip()]
    finally:
        response.release_conn()


def _seen(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def _versions(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["object"]["metadata"]["resourceVersion"]) for e in events]


def _list_version(custom: Any) -> str:
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    return str(listing["metadata"]["resourceVersion"])


@pytest.mark.parametrize("since", [None, "", "0"])
def test_a_watch_without_a_version_replays_the_current_objects_then_streams(
    cluster: FakeCluster, since: str | None
) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    custom.create_namespaced_custom_object(GROUP, VERSION, "team-b", PLURAL, _me("elsewhere"))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("b"))
    response = _watch(custom, timeout_seconds=2, **({} if since is None else {"resource_version": since}))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("c"))
    events = _events(response)
    assert _seen(events) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    assert events[0]["object"]["spec"] == {"a": 1}


def test_a_watch_from_a_lists_version_sends_exactly_the_later_events(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    since = _list_version(custom)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("b"))
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "a", {"spec": {"a": 2}}
    )
    events = _events(_watch(custom, resource_version=since, timeout_seconds=1))
    assert _seen(events) == [("ADDED", "b"), ("MODIFIED", "a")]
    added, modified = _versions(events)
    assert int(since) < added < modified == int(patched["metadata"]["resourceVersion"])
    assert events[1]["object"]["spec"] == {"a": 2}
    # Resuming from an event's version gives what came after it, and nothing is replayed.
    assert _seen(_events(_watch(custom, resource_version=str(added), timeout_seconds=1))) == [
        ("MODIFIED", "a")
    ]
    assert _events(_watch(custom, resource_version=str(modified), timeout_seconds=1)) == []


def test_every_page_of_a_list_carries_the_first_pages_version(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    for name in ("a", "b", "c"):
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me(name))
    first = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=2)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("d"))
    second = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, limit=2, _continue=first["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in first["items"] + second["items"]] == ["a", "b", "c", "d"]
    since = first["metadata"]["resourceVersion"]
    assert second["metadata"]["resourceVersion"] == since and "continue" not in second["metadata"]
    # A watch from the list's version misses nothing written while it was paged.
    assert _seen(_events(_watch(custom, resource_version=since, timeout_seconds=1))) == [("ADDED", "d")]


def test_a_label_selected_watch_sees_objects_enter_and_leave_the_selection(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))

    def patch(name: str, body: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name, body)

    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _labelled("keep", {"app": "x"}))
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _labelled("other", {"app": "y"})
    )
    replay = _events(_watch(custom, label_selector="app=x", timeout_seconds=1))
    assert _seen(replay) == [("ADDED", "keep")]
    since = _list_version(custom)
    patch("keep", {"metadata": {"labels": {"app": "y"}}})  # leaves the selection
    patch("keep", {"spec": {"a": 5}})  # outside it: not sent
    patch("other", {"metadata": {"labels": {"app": "x"}}})  # enters it
    patch("other", {"spec": {"a": 6}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "other")
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _labelled("new", {"app": "x"}))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _labelled("nope", {"app": "z"}))
    events = _events(_watch(custom, resource_version=since, label_selector="app=x", timeout_seconds=1))
    assert _seen(events) == [
        ("DELETED", "keep"),
        ("ADDED", "other"),
        ("MODIFIED", "other"),
        ("DELETED", "other"),
        ("ADDED", "new"),
    ]
    assert events[0]["object"]["metadata"]["labels"] == {"app": "y"}  # the new state, as a real server's
    assert events[2]["object"]["spec"] == {"a": 6}
    unfiltered = _events(_watch(custom, resource_version=since, timeout_seconds=1))
    assert len(unfiltered) == 7 and _seen(unfiltered)[1] == ("MODIFIED", "keep")


def test_a_version_older_than_the_watch_history_answers_410_expired(cluster: FakeCluster) -> None:
    cluster.inject(lambda k: setattr(k, "watch_history", 2))
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    since = _list_version(custom)
    created = [
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, _me(n), _preload_content=False
        )
        for n in "abc"
    ]
    first = json.loads(created[0].data)["metadata"]["resourceVersion"]
    # No timeoutSeconds: the server ends the stream itself after the error.
    assert _events(_watch(custom, resource_version=since)) == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({first})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    # The history still holds everything after the first create: that resumes exactly.
    resumed = _events(_watch(custom, resource_version=first, timeout_seconds=1))
    assert _seen(resumed) == [("ADDED", "b"), ("ADDED", "c")]


def test_timeout_seconds_ends_the_watch_cleanly(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    since = _list_version(custom)
    started = time.monotonic()
    events = _events(_watch(custom, resource_version=since, timeout_seconds=1))  # a broken stream raises
    elapsed = time.monotonic() - started
    assert events == [] and 0.9 <= elapsed < 10


def test_bookmarks_arrive_when_allowed_and_carry_the_stores_version(cluster: FakeCluster) -> None:
    cluster.inject(lambda k: setattr(k, "bookmark_interval", 0.2))
    api = kube_client(cluster.kubeconfig)
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    since = _list_version(custom)
    assert _events(_watch(custom, resource_version=since, timeout_seconds=1)) == []  # not asked: none
    response = _watch(custom, resource_version=since, allow_watch_bookmarks=True, timeout_seconds=2)
    secret = client.CoreV1Api(api).create_namespaced_secret("default", {"metadata": {"name": "s"}})
    events = _events(response)
    assert len(events) >= 2 and {e["type"] for e in events} == {"BOOKMARK"}
    assert all(
        e["object"]
        == {"kind": "ModelEngine", "apiVersion": f"{GROUP}/{VERSION}", "metadata": e["object"]["metadata"]}
        for e in events
    )
    versions = _versions(events)
    assert versions == sorted(versions) and versions[0] >= int(since)
    # The last one, right before the timeout, is at the store's version (another kind's write):
    # a quiet resource's watch resumes from there, with nothing to send and no 410.
    assert versions[-1] == int(secret.metadata.resource_version) > int(since)
    assert _events(_watch(custom, resource_version=str(versions[-1]), timeout_seconds=1)) == []


def test_deletes_take_a_new_version(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "a", {"spec": {"a": 2}}
    )
    held = _labelled("b", {"app": "x"}, finalizers=["example.com/hold"])
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, held)
    since = _list_version(custom)
    answer = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a")
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "b")  # marked only
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "b", {"metadata": {"finalizers": []}}
    )
    events = _events(_watch(custom, resource_version=since, timeout_seconds=1))
    assert _seen(events) == [("DELETED", "a"), ("MODIFIED", "b"), ("MODIFIED", "b"), ("DELETED", "b")]
    versions = _versions(events)
    assert int(patched["metadata"]["resourceVersion"]) < int(since) < versions[0]
    assert versions == sorted(set(versions))  # every write, each delete included, a newer version
    assert answer["metadata"]["resourceVersion"] == str(versions[0])  # the delete's answer agrees
    assert events[1]["object"]["metadata"]["deletionTimestamp"]
    assert cluster.get(PLURAL, "default", "b") is None
    # Resuming from the DELETED's version is past it: nothing is sent again.
    assert _events(_watch(custom, resource_version=str(versions[-1]), timeout_seconds=1)) == []


@pytest.mark.parametrize(
    ("flag", "watches"), [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)]
)
def test_the_watch_flag_is_read_as_a_real_server_reads_it(
    cluster: FakeCluster, flag: str, watches: bool
) -> None:
    api = kube_client(cluster.kubeconfig)
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    url = f"{api.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    response = api.request(
        "GET",
        url,
        query_params=[("watch", flag), ("timeoutSeconds", "1")],
        _preload_content=False,
        _request_timeout=(10, 30),
    )
    if watches:
        assert _seen(_events(response)) == [("ADDED", "a")]
    else:
        listing = json.loads(response.data)
        assert listing["kind"] == "ModelEngineList" and [i["metadata"]["name"] for i in listing["items"]] == [
            "a"
        ]


def test_a_write_carrying_a_stale_resource_version_is_a_conflict(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))

    def stored() -> dict[str, Any]:
        return cluster.get(PLURAL, "default", "a") or {}

    read_at = stored()["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a", {"spec": {"a": 2}})
    stale = {"metadata": {"resourceVersion": read_at}, "spec": {"a": 3}}
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a", stale)
    assert refused.value.status == 409
    status = json.loads(refused.value.body)
    assert status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert stored()["spec"]["a"] == 2  # nothing written
    current = stored()["metadata"]["resourceVersion"]
    fresh = {"metadata": {"resourceVersion": current}, "spec": {"a": 4}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a", fresh)
    assert stored()["spec"]["a"] == 4 and stored()["metadata"]["resourceVersion"] != current


def test_a_refused_write_stores_and_streams_nothing(cluster: FakeCluster) -> None:
    custom = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    cluster.inject(lambda k: k.refuse_next("POST", path, 422, message="spec.a: Invalid value"))
    since = _list_version(custom)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("a"))
    assert refused.value.status == 422
    assert json.loads(refused.value.body)["reason"] == "Invalid"
    assert cluster.get(PLURAL, "default", "a") is None
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _me("b"))  # only once
    events = _events(_watch(custom, resource_version=since, timeout_seconds=1))
    assert _seen(events) == [("ADDED", "b")]
