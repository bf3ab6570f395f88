"""The fake API's RBAC (tests/operator/rbac.py): requests made with a known token are allowed
exactly as far as the loaded Roles and bindings grant, over real HTTPS, and a denial is the
real server's `403` that stores nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelengine.operator.kube import ApiError
from modelengine.operator.kube_client import ClientApi
from tests.operator import rbac
from tests.operator.harness import FakeCluster, kube_client

ROBOT = rbac.service_account("ops", "robot")
SUBJECT = {"kind": "ServiceAccount", "name": "robot", "namespace": "ops"}
ME = ("modelengine.io", "v1alpha1")


def role(name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    """A Role in `namespace`, or a ClusterRole without one."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role" if namespace is not None else "ClusterRole",
        "metadata": meta,
        "rules": rules,
    }


def binding(
    name: str,
    role_kind: str,
    namespace: str | None = None,
    subjects: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A RoleBinding in `namespace`, or a ClusterRoleBinding without one, of `name`'s role."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding" if namespace is not None else "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": subjects or [SUBJECT],
    }


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"]}],
                }
            }
        },
    }


def forbidden(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The Status body of a call the server must refuse with 403."""
    with pytest.raises(ApiException) as err:
        call(*args, **kwargs)
    assert err.value.status == 403, err.value.body
    body: dict[str, Any] = json.loads(err.value.body)
    return body


def status(message: str, details: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


def robot_api(cluster: FakeCluster) -> client.ApiClient:
    return kube_client(cluster.kubeconfig_for(ROBOT))


def test_granted_verbs_pass_others_are_forbidden_as_a_real_server_says_and_store_nothing(
    cluster: FakeCluster,
) -> None:
    cluster.load_rbac(
        [
            role("jobs", [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}], "ml"),
            binding("jobs", "Role", "ml"),
        ]
    )
    batch = client.BatchV1Api(robot_api(cluster))
    created = batch.create_namespaced_job("ml", job("j1"))
    assert created.metadata.name == "j1" and cluster.get("jobs", "ml", "j1") is not None
    assert batch.read_namespaced_job("j1", "ml").metadata.uid == created.metadata.uid

    # A verb outside the rules: the exact Status a v1.36 server answers; the Job stays.
    assert forbidden(batch.delete_namespaced_job, "j1", "ml") == status(
        'jobs.batch "j1" is forbidden: User "system:serviceaccount:ops:robot" cannot delete resource '
        '"jobs" in API group "batch" in the namespace "ml"',
        {"name": "j1", "group": "batch", "kind": "jobs"},
    )
    assert cluster.get("jobs", "ml", "j1") is not None
    body = forbidden(batch.patch_namespaced_job, "j1", "ml", {"metadata": {"labels": {"x": "y"}}})
    assert body["message"].endswith('cannot patch resource "jobs" in API group "batch" in the namespace "ml"')
    assert "x" not in (cluster.get("jobs", "ml", "j1") or {})["metadata"].get("labels", {})
    # A namespace outside the binding: nothing stored, no event for watchers.
    assert forbidden(batch.create_namespaced_job, "default", job("j2")) == status(
        'jobs.batch is forbidden: User "system:serviceaccount:ops:robot" cannot create resource "jobs" '
        'in API group "batch" in the namespace "default"',
        {"group": "batch", "kind": "jobs"},
    )
    assert cluster.get("jobs", "default", "j2") is None
    # All namespaces at once: only a cluster-wide grant covers it.
    assert forbidden(batch.list_job_for_all_namespaces)["message"] == (
        'jobs.batch is forbidden: User "system:serviceaccount:ops:robot" cannot list resource "jobs" '
        'in API group "batch" at the cluster scope'
    )
    # Another resource of the same group.
    assert forbidden(batch.list_namespaced_cron_job, "ml")["details"] == {
        "group": "batch",
        "kind": "cronjobs",
    }
    assert [(a.verb, a.resource, a.namespace, a.name) for a in cluster.kmock.denied] == [
        ("delete", "jobs", "ml", "j1"),
        ("patch", "jobs", "ml", "j1"),
        ("create", "jobs", "default", ""),
        ("list", "jobs", "", ""),
        ("list", "cronjobs", "ml", ""),
    ]
    # Denied requests never reached the store's handlers (KMock's request log).
    methods = [
        str(r.method.value if hasattr(r.method, "value") else r.method).upper() for r in cluster.requests()
    ]
    assert not [m for m in methods if m.endswith(("DELETE", "PATCH"))]


def test_resource_names_narrow_a_grant_to_named_requests(cluster: FakeCluster) -> None:
    admin = client.CoreV1Api(kube_client(cluster.kubeconfig))
    for name in ("store", "other"):
        admin.create_namespaced_secret("default", {"metadata": {"name": name}, "data": {}})
    cluster.load_rbac(
        [
            role(
                "one-secret",
                [
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "verbs": ["get", "list", "watch"],
                        "resourceNames": ["store"],
                    }
                ],
            ),
            binding("one-secret", "ClusterRole"),
        ]
    )
    core = client.CoreV1Api(robot_api(cluster))
    assert core.read_namespaced_secret("store", "default").metadata.name == "store"
    assert forbidden(core.read_namespaced_secret, "other", "default") == status(
        'secrets "other" is forbidden: User "system:serviceaccount:ops:robot" cannot get resource '
        '"secrets" in API group "" in the namespace "default"',
        {"name": "other", "kind": "secrets"},
    )
    # A list names nothing: resourceNames never cover it (and the Secrets stay unlisted).
    assert forbidden(core.list_namespaced_secret, "default")["message"] == (
        'secrets is forbidden: User "system:serviceaccount:ops:robot" cannot list resource "secrets" '
        'in API group "" in the namespace "default"'
    )
    # ... unless it names one, as a real server reads `fieldSelector=metadata.name=...`.
    listed = core.list_namespaced_secret("default", field_selector="metadata.name=store")
    assert listed.metadata is not None
    assert forbidden(core.list_namespaced_secret, "default", field_selector="metadata.name=other")[
        "details"
    ] == {
        "name": "other",
        "kind": "secrets",
    }


def test_a_status_grant_allows_the_status_patch_only(cluster: FakeCluster) -> None:
    admin = client.CustomObjectsApi(kube_client(cluster.kubeconfig))
    doc = {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {"name": "m"},
        "spec": {"a": 1},
    }
    admin.create_namespaced_custom_object(*ME, "default", "modelengines", doc)
    cluster.load_rbac(
        [
            role(
                "status",
                [
                    {
                        "apiGroups": ["modelengine.io"],
                        "resources": ["modelengines/status"],
                        "verbs": ["get", "patch"],
                    }
                ],
            ),
            binding("status", "ClusterRole"),
        ]
    )
    custom = client.CustomObjectsApi(robot_api(cluster))
    patched = custom.patch_namespaced_custom_object_status(
        *ME, "default", "modelengines", "m", {"status": {"phase": "Ready"}}
    )
    assert patched["status"] == {"phase": "Ready"}
    assert custom.get_namespaced_custom_object_status(*ME, "default", "modelengines", "m")["spec"] == {"a": 1}
    assert forbidden(
        custom.patch_namespaced_custom_object, *ME, "default", "modelengines", "m", {"spec": {"a": 2}}
    ) == status(
        'modelengines.modelengine.io "m" is forbidden: User "system:serviceaccount:ops:robot" cannot '
        'patch resource "modelengines" in API group "modelengine.io" in the namespace "default"',
        {"name": "m", "group": "modelengine.io", "kind": "modelengines"},
    )
    assert forbidden(custom.get_namespaced_custom_object, *ME, "default", "modelengines", "m")[
        "message"
    ].endswith('cannot get resource "modelengines" in API group "modelengine.io" in the namespace "default"')
    stored = cluster.get("modelengines", "default", "m") or {}
    assert stored["spec"] == {"a": 1} and stored["status"] == {"phase": "Ready"}


def test_a_rolebinding_to_a_clusterrole_grants_in_its_namespace_only(cluster: FakeCluster) -> None:
    admin = client.BatchV1Api(kube_client(cluster.kubeconfig))
    for namespace in ("ml", "default"):
        admin.create_namespaced_job(namespace, job("j"))
    reader = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]
    cluster.load_rbac([role("reader", reader), binding("reader", "ClusterRole", "ml")])
    batch = client.BatchV1Api(robot_api(cluster))
    assert [j.metadata.name for j in batch.list_namespaced_job("ml").items] == ["j"]
    assert batch.read_namespaced_job("j", "ml").metadata.namespace == "ml"
    assert forbidden(batch.read_namespaced_job, "j", "default")["message"] == (
        'jobs.batch "j" is forbidden: User "system:serviceaccount:ops:robot" cannot get resource "jobs" '
        'in API group "batch" in the namespace "default"'
    )
    assert forbidden(batch.list_job_for_all_namespaces)["message"].endswith(
        'cannot list resource "jobs" in API group "batch" at the cluster scope'
    )
    # A ServiceAccount subject without a namespace is the RoleBinding's own namespace's.
    local = binding("reader", "ClusterRole", "default", [{"kind": "ServiceAccount", "name": "robot"}])
    cluster.load_rbac([local])
    assert forbidden(batch.list_namespaced_job, "default")["details"] == {"group": "batch", "kind": "jobs"}
    cluster.load_rbac([{**local, "metadata": {"name": "reader-ops", "namespace": "ops"}}])
    assert batch.list_namespaced_job("ops").items == []


def test_a_watch_needs_the_watch_verb(cluster: FakeCluster) -> None:
    admin = client.BatchV1Api(kube_client(cluster.kubeconfig))
    admin.create_namespaced_job("ml", job("j"))
    lister = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}]
    cluster.load_rbac([role("jobs", lister, "ml"), binding("jobs", "Role", "ml")])
    batch = client.BatchV1Api(robot_api(cluster))
    assert [j.metadata.name for j in batch.list_namespaced_job("ml", watch=False).items] == ["j"]
    for spelling in ("true", True, "1"):
        body = forbidden(batch.list_namespaced_job, "ml", watch=spelling, _preload_content=False)
        assert body["message"] == (
            'jobs.batch is forbidden: User "system:serviceaccount:ops:robot" cannot watch resource "jobs" '
            'in API group "batch" in the namespace "ml"'
        ), spelling
    cluster.load_rbac([role("jobs", [{**lister[0], "verbs": ["list", "watch"]}], "ml")])
    response = batch.list_namespaced_job("ml", watch="true", timeout_seconds=1, _preload_content=False)
    try:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        response.release_conn()
    assert response.status == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "j")]


def test_the_pod_proxy_needs_pods_proxy_and_is_not_reached_without_it(cluster: FakeCluster) -> None:
    reached: list[tuple[str, str, int, str]] = []

    def proxy(namespace: str, pod: str, port: int, path: str) -> tuple[int, bytes]:
        reached.append((namespace, pod, port, path))
        return 200, b'{"ready": true}'

    cluster.route_pod_proxy(proxy)
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    cluster.load_rbac([role("pods", pods), binding("pods", "ClusterRole")])
    core = client.CoreV1Api(robot_api(cluster))
    assert forbidden(
        core.connect_get_namespaced_pod_proxy_with_path, "runtime-0:8000", "default", "v2/health/ready"
    ) == status(
        'pods "runtime-0:8000" is forbidden: User "system:serviceaccount:ops:robot" cannot get resource '
        '"pods/proxy" in API group "" in the namespace "default"',
        {"name": "runtime-0:8000", "kind": "pods"},
    )
    assert reached == []
    cluster.load_rbac(
        [role("pods", [*pods, {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]}])]
    )
    response = core.connect_get_namespaced_pod_proxy_with_path(
        "runtime-0:8000", "default", "v2/health/ready", _preload_content=False
    )
    assert (response.status, json.loads(response.data)) == (200, {"ready": True})
    assert reached == [("default", "runtime-0", 8000, "v2/health/ready")]


def test_the_operator_tells_a_refused_proxy_from_the_pods_own_answer(cluster: FakeCluster) -> None:
    not_ready = b'{"ready": false, "reason": "engine failed acceptance: golden sample 0"}'
    cluster.route_pod_proxy(lambda namespace, pod, port, path: (503, not_ready))
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    cluster.load_rbac([role("pods", pods), binding("pods", "ClusterRole")])
    api = ClientApi(kubeconfig=str(cluster.kubeconfig_for(ROBOT)))
    try:
        # The API server's 403 is an error, not a runtime saying "Forbidden".
        with pytest.raises(ApiError) as refused:
            asyncio.run(api.pod_proxy_get("default", "runtime-0", 8000, "/v2/health/ready"))
        assert refused.value.status == 403 and "cannot get resource" in str(refused.value)
        cluster.load_rbac(
            [role("pods", [*pods, {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]}])]
        )
        answer = asyncio.run(api.pod_proxy_get("default", "runtime-0", 8000, "/v2/health/ready"))
        assert answer == (503, not_ready)  # the pod's own non-2xx answer, body intact
    finally:
        api.close()


def test_wildcards_and_subresource_wildcards(cluster: FakeCluster) -> None:
    admin = client.BatchV1Api(kube_client(cluster.kubeconfig))
    admin.create_namespaced_job("ml", job("j"))
    cluster.load_rbac(
        [
            role(
                "any",
                [
                    {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]},
                    {"apiGroups": ["batch"], "resources": ["*"], "verbs": ["get"]},
                ],
            ),
            binding("any", "ClusterRole"),
        ]
    )
    batch = client.BatchV1Api(robot_api(cluster))
    assert batch.read_namespaced_job("j", "ml").metadata.name == "j"
    patched = batch.patch_namespaced_job_status("j", "ml", {"status": {"active": 1}})
    assert patched.status.active == 1
    assert forbidden(batch.patch_namespaced_job, "j", "ml", {"metadata": {"labels": {"a": "b"}}})[
        "message"
    ].endswith('cannot patch resource "jobs" in API group "batch" in the namespace "ml"')
    core = client.CoreV1Api(batch.api_client)
    assert forbidden(core.read_namespaced_pod, "p", "ml")["details"] == {"name": "p", "kind": "pods"}


def test_discovery_is_open_to_known_users_and_unknown_tokens_stay_admin(cluster: FakeCluster) -> None:
    # A user bound to nothing but the bootstrap roles: discovery, nothing else.
    api = robot_api(cluster)

    def discover(path: str) -> Any:
        response = api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False)
        assert response.status == 200, path
        return json.loads(response.data)

    assert "gitVersion" in discover("/version")
    assert discover("/api")["versions"] == ["v1"]
    assert "modelengine.io" in [g["name"] for g in discover("/apis")["groups"]]
    assert "jobs" in [r["name"] for r in discover("/apis/batch/v1")["resources"]]
    with pytest.raises(ApiException) as err:
        api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    assert err.value.status == 403
    assert json.loads(err.value.body)["message"] == (
        'forbidden: User "system:serviceaccount:ops:robot" cannot get path "/metrics"'
    )
    assert forbidden(client.CoreV1Api(api).list_namespace)["message"] == (
        'namespaces is forbidden: User "system:serviceaccount:ops:robot" cannot list resource '
        '"namespaces" in API group "" at the cluster scope'
    )
    # A binding of a role that does not exist: the real server's RBAC error is the reason.
    cluster.load_rbac([binding("ghost", "ClusterRole")])
    assert forbidden(client.CoreV1Api(api).list_node)["message"] == (
        'nodes is forbidden: User "system:serviceaccount:ops:robot" cannot list resource "nodes" in API '
        'group "" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "ghost" not found'
    )
    # The tests' own kubeconfig (a token the fake does not know) is admin, as before.
    admin = client.CoreV1Api(kube_client(cluster.kubeconfig))
    admin.create_namespaced_secret("team", {"metadata": {"name": "s"}, "data": {}})
    assert [s.metadata.name for s in admin.list_secret_for_all_namespaces().items] == ["s"]
    assert len(cluster.kmock.denied) == 3


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ml/pods", {}, ("list", "", "pods", "", "ml", "")),
        ("GET", "/api/v1/namespaces/ml/pods", {"watch": "True"}, ("watch", "", "pods", "", "ml", "")),
        ("GET", "/api/v1/namespaces/ml/pods", {"watch": "false"}, ("list", "", "pods", "", "ml", "")),
        ("GET", "/api/v1/watch/namespaces/ml/pods", {}, ("watch", "", "pods", "", "ml", "")),
        ("GET", "/api/v1/namespaces/ml/pods/p", {}, ("get", "", "pods", "", "ml", "p")),
        ("GET", "/api/v1/namespaces/ml/pods/p/log", {}, ("get", "", "pods", "log", "ml", "p")),
        ("GET", "/api/v1/namespaces/ml/pods/p:80/proxy/a/b", {}, ("get", "", "pods", "proxy", "ml", "p:80")),
        ("GET", "/api/v1/pods", {"fieldSelector": "metadata.name=p"}, ("list", "", "pods", "", "", "p")),
        ("POST", "/apis/batch/v1/namespaces/ml/jobs", {}, ("create", "batch", "jobs", "", "ml", "")),
        ("PUT", "/apis/batch/v1/namespaces/ml/jobs/j", {}, ("update", "batch", "jobs", "", "ml", "j")),
        (
            "PATCH",
            "/apis/batch/v1/namespaces/ml/jobs/j/status",
            {},
            ("patch", "batch", "jobs", "status", "ml", "j"),
        ),
        ("DELETE", "/apis/batch/v1/namespaces/ml/jobs/j", {}, ("delete", "batch", "jobs", "", "ml", "j")),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/ml/jobs",
            {},
            ("deletecollection", "batch", "jobs", "", "ml", ""),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/namespaces/ml", {}, ("get", "", "namespaces", "", "ml", "ml")),
        ("PUT", "/api/v1/namespaces/ml/finalize", {}, ("update", "", "namespaces", "finalize", "ml", "ml")),
        ("GET", "/api/v1/nodes", {}, ("list", "", "nodes", "", "", "")),
    ],
)
def test_request_attributes_as_the_request_info_factory_reads_them(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    a = rbac.request_attributes(rbac.user_named(ROBOT), method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize(
    "path", ["/", "/api", "/api/v1", "/apis", "/apis/batch", "/apis/batch/v1", "/version"]
)
def test_discovery_paths_are_non_resource_requests(path: str) -> None:
    a = rbac.request_attributes(rbac.user_named(ROBOT), "GET", path, {})
    assert (a.resource_request, a.verb, a.path) == (False, "get", path)
    assert rbac.Authorizer().authorize(a).allowed == (path != "/")
    assert rbac.user_named(ROBOT).groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ops",
        "system:authenticated",
    )


# ---- the chart's RBAC against every call the operator makes ----


def _engine(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {"name": "resnet", "namespace": namespace},
        "spec": {
            "model": {"source": "s3://models/resnet.pt", "format": "torchscript"},
            "export": {"inputs": [{"name": "x", "shape": [1, 3, 224, 224]}]},
            "targets": [{"auto": True}],
            "storage": {"uri": "s3://models/store", "secretRef": {"name": "store"}},
            "serving": {"maxReplicas": 2},
        },
    }


def _seed(cluster: FakeCluster, namespace: str) -> None:
    """What the operator finds: a ModelEngine, Secrets, a Node; a pod the proxy answers for."""
    api = kube_client(cluster.kubeconfig)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        *ME, namespace, "modelengines", _engine(namespace)
    )
    core = client.CoreV1Api(api)
    for name in ("store", "other"):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": {}})
    core.create_node({"metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}}})
    cluster.route_pod_proxy(lambda namespace, pod, port, path: (200, b'{"ready": true}'))


def _chart_operator(cluster: FakeCluster, tmp_path: Path, values: dict[str, Any]) -> tuple[Any, Path]:
    """The chart rendered with `values`, its RBAC loaded; the operator's ClientApi as its
    ServiceAccount, and that kubeconfig."""
    from tests.helm.test_chart import HELM, render

    if HELM is None:
        pytest.skip("no helm binary: run scripts/get-helm.sh")
    kubeconfig = cluster.chart_kubeconfig(render(tmp_path, values))
    return ClientApi(kubeconfig=str(kubeconfig), user_agent="modelengine-operator"), kubeconfig


async def _every_operator_call(api: Any, namespace: str, scope: str | None) -> None:
    """Each kind of call `ClientApi` makes, in `namespace`; lists and watches over `scope`
    (None: all namespaces), leases in the release namespace. Raises on any refusal."""
    from modelengine.api.validation import parse_modelengine
    from modelengine.operator import serving_objects
    from modelengine.operator.build_jobs import LABEL_MANAGED, MANAGED_BY, build_job
    from modelengine.operator.config import OperatorConfig
    from modelengine.operator.leader import LeaseElector
    from modelengine.operator.serving_groups import ServingGroup
    from tests.helm.test_chart import NAMESPACE as RELEASE_NAMESPACE
    from tests.operator.test_serving import GPU, L4

    me = parse_modelengine(_engine(namespace))
    uid = "u-1"
    config = OperatorConfig()
    selector = f"{LABEL_MANAGED}={MANAGED_BY}"
    # Builder Jobs: create, list (paged), watch from the list, delete.
    job_doc = build_job(me=me, uid=uid, generation=1, target=GPU, build_key="a" * 64, config=config)
    await api.create_job(namespace, job_doc)
    name = job_doc["metadata"]["name"]
    listing = await api.list_jobs(scope, selector)
    assert [j["metadata"]["name"] for j in listing.items] == [name]
    stream = api.watch_jobs(scope, selector, listing.resource_version, 1)
    try:
        assert [e["type"] for e in await asyncio.to_thread(lambda: list(stream.events()))] == ["BOOKMARK"]
    finally:
        stream.close()
    # A failed Job's pods, serving pods, a not-ready pod's health through the proxy.
    assert await api.job_pods(namespace, name) == []
    assert await api.list_pods(namespace, selector) == []
    assert await api.pod_proxy_get(namespace, "resnet-nvidia-l4-runtime-0", 8000, "/v2/health/ready") == (
        200,
        b'{"ready": true}',
    )
    # The ModelEngine: its finalizer, its status.
    await api.patch_metadata(namespace, "resnet", {"finalizers": ["modelengine.io/cleanup"]})
    assert await api.patch_status(namespace, "resnet", {"phase": "Building"}) is not None
    # spec.serving: each kind created, read, patched, listed, deleted.
    group = ServingGroup("nvidia-l4", L4, GPU, "1.7.1.116", None)
    objects = serving_objects.render(me=me, uid=uid, config=config, groups=[group])
    assert sorted(o["kind"] for o in objects) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    for obj in objects:
        await api.create_object(obj["kind"], namespace, obj)
        assert await api.read_object(obj["kind"], namespace, obj["metadata"]["name"]) is not None
        await api.patch_object(
            obj["kind"], namespace, obj["metadata"]["name"], {"metadata": {"labels": {"p": "1"}}}
        )
    assert len(await api.list_deployments(scope, selector)) == 1
    for obj in objects:
        await api.delete_object(obj["kind"], namespace, obj["metadata"]["name"])
    await api.delete_job(namespace, name)
    assert [n["metadata"]["name"] for n in await api.list_nodes()] == ["gpu-0"]
    # Leader election, in the release's own namespace.
    elector = LeaseElector(api=api, namespace=RELEASE_NAMESPACE, name="me-modelengine", identity="a")
    assert await elector.try_acquire_or_renew()  # read (none), create
    assert await elector.try_acquire_or_renew()  # read, patch (renew)
    await elector.release()


def _kopf_calls(kubeconfig: Path, namespace: str) -> None:
    """What kopf asks of the API for the operator: list and watch ModelEngines, Nodes and
    serving Deployments everywhere, CRDs and namespaces; post Events."""
    api = kube_client(kubeconfig)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    apps, crds = client.AppsV1Api(api), client.ApiextensionsV1Api(api)
    for call, args in (
        (custom.list_cluster_custom_object, (*ME, "modelengines")),
        (core.list_node, ()),
        (apps.list_deployment_for_all_namespaces, ()),
        (crds.list_custom_resource_definition, ()),
        (core.list_namespace, ()),
    ):
        for watch in (False, True):
            response = call(*args, watch=watch, timeout_seconds=1, _preload_content=False)
            assert response.status == 200, call
            response.read()  # a watch: until the server's timeout ends it
            response.release_conn()
    event = {
        "metadata": {"generateName": "resnet."},
        "involvedObject": {"apiVersion": "modelengine.io/v1alpha1", "kind": "ModelEngine", "name": "resnet"},
        "reason": "Building",
        "message": "m",
        "type": "Normal",
    }
    core.create_namespaced_event(namespace, event)


def _refusal(call: Any) -> str:
    """The message of a call the server refuses with 403."""
    from modelengine.operator.kube import ApiError

    with pytest.raises((ApiError, ApiException)) as err:
        result = call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    status_code = getattr(err.value, "status", None)
    assert status_code == 403, err.value
    if isinstance(err.value, ApiException):
        return str(json.loads(err.value.body)["message"])
    return str(err.value).removeprefix("HTTP 403: ")  # ApiError: the Status message, prefixed


OPERATOR = "system:serviceaccount:modelengine-system:me-modelengine"


def test_the_chart_grants_every_call_the_operator_makes_and_no_secret_it_is_not_told_of(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    _seed(cluster, "default")
    api, kubeconfig = _chart_operator(cluster, tmp_path, {})
    try:
        asyncio.run(_every_operator_call(api, "default", None))
        _kopf_calls(kubeconfig, "default")
        assert cluster.kmock.denied == []
        # Told no Secret names or namespaces: no Secret at all, and never a list of them.
        assert 'cannot get resource "secrets"' in _refusal(lambda: api.read_secret("default", "store"))
        core = client.CoreV1Api(kube_client(kubeconfig))
        assert _refusal(core.list_secret_for_all_namespaces) == (
            f'secrets is forbidden: User "{OPERATOR}" cannot list resource "secrets" in API group "" at the '
            "cluster scope"
        )
        # Nothing beyond its own objects: no pods of its own, no deleting ModelEngines, no Lease elsewhere.
        pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        assert _refusal(lambda: core.create_namespaced_pod("default", pod)).endswith(
            'cannot create resource "pods" in API group "" in the namespace "default"'
        )
        custom = client.CustomObjectsApi(kube_client(kubeconfig))
        assert _refusal(
            lambda: custom.delete_namespaced_custom_object(*ME, "default", "modelengines", "resnet")
        )
        from modelengine.operator.leader import LeaseElector

        elsewhere = LeaseElector(api=api, namespace="default", name="me-modelengine", identity="a")
        assert _refusal(elsewhere.try_acquire_or_renew).endswith(
            'cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "default"'
        )
        assert (
            cluster.get("pods", "default", "x") is None
            and cluster.get("leases", "default", "me-modelengine") is None
        )
    finally:
        api.close()


def test_the_chart_with_secret_names_reads_those_secrets_only(cluster: FakeCluster, tmp_path: Path) -> None:
    _seed(cluster, "default")
    api, _ = _chart_operator(cluster, tmp_path, {"rbac": {"secretNames": ["store"]}})
    try:
        assert asyncio.run(api.read_secret("default", "store")) == {}
        assert _refusal(lambda: api.read_secret("default", "other")) == (
            f'secrets "other" is forbidden: User "{OPERATOR}" cannot get resource "secrets" in API group "" '
            'in the namespace "default"'
        )
    finally:
        api.close()


def test_the_chart_with_watched_namespaces_grants_there_only(cluster: FakeCluster, tmp_path: Path) -> None:
    _seed(cluster, "ml")
    api, kubeconfig = _chart_operator(cluster, tmp_path, {"operator": {"watchNamespaces": ["ml"]}})
    try:
        asyncio.run(_every_operator_call(api, "ml", "ml"))
        assert cluster.kmock.denied == []
        assert asyncio.run(api.read_secret("ml", "store")) == {}  # secretNamespaces: the watched ones
        job_doc = {**job("j"), "metadata": {"name": "j", "labels": {"a": "b"}}}
        assert _refusal(lambda: api.create_job("default", job_doc)).endswith(
            'cannot create resource "jobs" in API group "batch" in the namespace "default"'
        )
        assert _refusal(lambda: api.list_jobs(None, "a=b")).endswith(
            'cannot list resource "jobs" in API group "batch" at the cluster scope'
        )
        assert _refusal(lambda: api.read_secret("default", "store")).endswith('in the namespace "default"')
        # Nodes stay readable cluster-wide (GPU kinds); kopf's ModelEngine watch is per namespace.
        assert [n["metadata"]["name"] for n in asyncio.run(api.list_nodes())] == ["gpu-0"]
        custom = client.CustomObjectsApi(kube_client(kubeconfig))
        assert custom.list_namespaced_custom_object(*ME, "ml", "modelengines")["items"]
        assert _refusal(lambda: custom.list_cluster_custom_object(*ME, "modelengines"))
    finally:
        api.close()


def test_the_chart_grants_the_webhook_its_certificate_secret_and_configuration_only(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    """The operator as its own CA (webhook.enabled, no cert-manager): it creates its Secret,
    rotates it by name and writes the caBundle of this release's configuration, nothing else."""
    from modelengine.operator.webhook_certs import ClientCertApi, WebhookCerts, service_dns_names
    from tests.helm.test_chart import HELM, container, only, render
    from tests.helm.test_chart import NAMESPACE as RELEASE_NAMESPACE

    if HELM is None:
        pytest.skip("no helm binary: run scripts/get-helm.sh")
    docs = render(tmp_path, {"webhook": {"enabled": True}})
    flags = dict(a[2:].split("=", 1) for a in container(docs)["args"] if a.startswith("--webhook-"))
    admin = kube_client(cluster.kubeconfig)
    configuration = only(docs, "MutatingWebhookConfiguration")
    client.AdmissionregistrationV1Api(admin).create_mutating_webhook_configuration(configuration)
    api = ClientCertApi(kube_client(cluster.chart_kubeconfig(docs)).configuration)

    def certs(secret: str, webhook_configuration: str) -> WebhookCerts:
        return WebhookCerts(
            api=api,
            namespace=RELEASE_NAMESPACE,
            secret=secret,
            dns_names=service_dns_names(flags["webhook-service"], RELEASE_NAMESPACE),
            webhook_configuration=webhook_configuration,
            managed=True,
        )

    try:
        ours = certs(flags["webhook-secret"], flags["webhook-configuration"])
        first = asyncio.run(ours.ensure())  # read (none), create, read + patch the configuration
        stored = cluster.get("mutatingwebhookconfigurations", None, flags["webhook-configuration"]) or {}
        (hook,) = stored["webhooks"]
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == first.ca_pem
        # Its CA key gone: a rotation patches the Secret by name.
        client.CoreV1Api(admin).patch_namespaced_secret(
            flags["webhook-secret"], RELEASE_NAMESPACE, {"data": {WebhookCerts.CA_KEY: None}}
        )
        second = asyncio.run(ours.ensure())
        assert second.cert_pem != first.cert_pem
        assert cluster.kmock.denied == []
        # Any other Secret or configuration: refused by name.
        assert _refusal(lambda: api.read_secret_object(RELEASE_NAMESPACE, "other")).endswith(
            'cannot get resource "secrets" in API group "" in the namespace "modelengine-system"'
        )
        assert _refusal(lambda: api.read_webhook_configuration("other")) == (
            f'mutatingwebhookconfigurations.admissionregistration.k8s.io "other" is forbidden: User "{OPERATOR}" '
            'cannot get resource "mutatingwebhookconfigurations" in API group "admissionregistration.k8s.io" '
            "at the cluster scope"
        )
    finally:
        api.close()
