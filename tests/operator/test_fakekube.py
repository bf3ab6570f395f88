"""The KMock extension behaves like a real API server where the operator relies on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.operator.fakekube import selector_matches
from tests.operator.harness import FakeCluster, kube_client

GROUP, VERSION, PLURAL = "modelengine.io", "v1alpha1", "modelengines"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    c = FakeCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


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
