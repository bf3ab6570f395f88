"""`spec.serving`: the rendered Deployment/Service/HPA (units) and the operator applying them.

The end-to-end scenario runs the operator against KMock with a real TRT-RTX build of the
tiny model (one target), then checks the objects in the API server, that a restart writes
nothing, that a serving change patches, and that removing `spec.serving` deletes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.operator import serving_objects as serving
from modelengine.operator.config import OperatorConfig
from tests.operator.conftest import NAMESPACE, World
from tests.operator.harness import wait_for

GPU = ResolvedTarget(BackendName.TENSORRT_RTX, "8.9")
CPU = ResolvedTarget(BackendName.ONNXRUNTIME, None)


def _me(**serving_spec: Any) -> Any:
    return parse_modelengine(
        {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": "resnet", "namespace": "ml"},
            "spec": {
                "model": {"source": "s3://models/resnet.pt", "format": "torchscript"},
                "export": {"inputs": [{"name": "x", "shape": [1, 3, 224, 224]}]},
                "targets": [{"auto": True}],
                "storage": {
                    "uri": "s3://models/store",
                    "endpointUrl": "http://minio:9000",
                    "secretRef": {"name": "creds"},
                },
                "serving": serving_spec,
            },
        }
    )


def test_deployment_runs_the_runtime_sidecar_with_probes_ports_and_credentials() -> None:
    me = _me(minReplicas=2, maxReplicas=5, batching={"maxBatchSize": 16, "maxDelayMs": 5})
    dep = serving.deployment(me=me, uid="u-1", config=OperatorConfig(runtime_image="rt:1"), targets=[GPU])
    assert dep["metadata"]["name"] == "resnet-runtime" and dep["metadata"]["namespace"] == "ml"
    assert dep["metadata"]["labels"]["modelengine.io/name"] == "resnet"
    assert dep["metadata"]["ownerReferences"][0] == {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "name": "resnet",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": False,
    }
    pod = dep["spec"]["template"]["spec"]
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert "replicas" not in dep["spec"]  # the HPA owns it
    (container,) = pod["containers"]
    assert container["image"] == "rt:1"
    cmd = container["command"]
    assert cmd[:2] == ["modelengine", "serve"]
    flags = dict(zip(cmd[2::2], cmd[3::2], strict=False))
    assert flags["--store"] == "s3://models/store" and flags["--s3-endpoint"] == "http://minio:9000"
    assert flags["--namespace"] == "ml" and flags["--name"] == "resnet"
    assert flags["--http-port"] == "8000" and flags["--metrics-port"] == "8002"
    assert flags["--max-batch-size"] == "16" and flags["--max-delay-ms"] == "5"
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 8000),
        ("metrics", 8002),
    ]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_cpu_engine_in_the_release_runs_the_pods_on_cpu_and_no_batching_is_passed() -> None:
    me = _me(image="mine:2", batching={"enabled": False})
    dep = serving.deployment(me=me, uid=None, config=OperatorConfig(), targets=[GPU, CPU])
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in dep["spec"]["template"]["spec"]  # the server drops an empty list
    assert container["image"] == "mine:2"
    assert "--no-batching" in container["command"] and "--max-batch-size" not in container["command"]
    assert "ownerReferences" not in dep["metadata"]
    assert serving.wants_gpu([GPU]) and not serving.wants_gpu([CPU]) and not serving.wants_gpu([])


def test_service_and_hpa_per_metric() -> None:
    svc = serving.service(me=_me(), uid="u")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000), ("metrics", 8002)]
    assert svc["spec"]["selector"] == {
        "modelengine.io/name": "resnet",
        "app.kubernetes.io/component": "runtime",
    }

    hpa = serving.autoscaler(
        me=_me(minReplicas=2, maxReplicas=6, autoscaling={"metric": "cpu", "target": 60}), uid="u"
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "resnet-runtime",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        }
    ]
    for metric, name in (
        ("inflight", "modelengine_runtime_inflight_requests"),
        ("rps", "modelengine_runtime_requests_per_second"),
    ):
        hpa = serving.autoscaler(me=_me(autoscaling={"metric": metric, "target": 8}), uid="u")
        assert hpa["spec"]["metrics"] == [
            {
                "type": "Pods",
                "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": "8"}},
            }
        ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet", "resnet-runtime"), ("my.model", "my-model-runtime"), ("9lives", "me-9lives-runtime")],
)
def test_serving_names_are_dns_labels(name: str, expected: str) -> None:
    assert serving.serving_name(name) == expected
    long = serving.serving_name("a" * 200)
    assert len(long) <= 63 and long.endswith("-runtime") and long != serving.serving_name("a" * 199)


def test_needs_update_ignores_server_defaults_but_sees_our_changes() -> None:
    desired = serving.service(me=_me(), uid="u")
    existing = {
        **desired,
        "metadata": {**desired["metadata"], "resourceVersion": "7", "uid": "x"},
        "spec": {
            **desired["spec"],
            "clusterIP": "10.0.0.7",
            "sessionAffinity": "None",
            "ports": [{**p, "targetPort": str(p["targetPort"])} for p in desired["spec"]["ports"]],
        },
    }
    assert not serving.needs_update(existing, desired)
    changed = {**existing, "spec": {**existing["spec"], "type": "NodePort"}}
    assert serving.needs_update(changed, desired)
    relabelled = {**existing, "metadata": {**existing["metadata"], "labels": {}}}
    assert serving.needs_update(relabelled, desired)


# ---- end to end ----


def _writes(world: World, start: int) -> list[tuple[str, str]]:
    out = []
    for request in world.cluster.requests()[start:]:
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method.endswith(("POST", "PATCH", "PUT", "DELETE")):
            out.append((method, request.url.path))
    return out


def _serving_objects(world: World) -> dict[str, dict[str, Any] | None]:
    return {
        plural: world.cluster.get(plural, NAMESPACE, "served-runtime")
        for plural in ("deployments", "services", "horizontalpodautoscalers")
    }


def test_serving_objects_follow_the_modelengine(world: World) -> None:
    doc = world.modelengine(
        "served",
        targets=[{"computeCapability": "8.9"}],
        serving={"minReplicas": 1, "maxReplicas": 3, "autoscaling": {"metric": "cpu", "target": 50}},
    )
    operator = world.operator(options={"runtime_image": "runtime:test"})
    try:
        world.apply(doc)
        wait_for(lambda: world.status("served").get("phase") == "Ready", timeout=120, what="Ready")
        objs = wait_for(
            lambda: all(_serving_objects(world).values()) and _serving_objects(world), what="serving objects"
        )
        uid = world.cluster.get("modelengines", NAMESPACE, "served")["metadata"]["uid"]  # type: ignore[index]
        dep, svc, hpa = objs["deployments"], objs["services"], objs["horizontalpodautoscalers"]
        for obj in (dep, svc, hpa):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
            assert obj["metadata"]["labels"]["modelengine.io/name"] == "served"
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "runtime:test"
        assert container["command"][:2] == ["modelengine", "serve"]
        assert f"s3://{world.bucket}/store" in container["command"]
        assert world.endpoint in container["command"]
        assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # only GPU engines
        assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8002]
        assert hpa["spec"]["maxReplicas"] == 3
        assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
    finally:
        operator.stop()

    # A restarted operator reads the objects, finds them as rendered, and writes nothing.
    start = len(world.cluster.requests())
    operator = world.operator(options={"runtime_image": "runtime:test"})
    try:
        wait_for(
            lambda: operator.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) >= 1,
            what="the initial reconciles",
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        assert _writes(world, start) == []

        # A serving change patches the HPA in place (one write), nothing else.
        start = len(world.cluster.requests())
        doc["spec"]["serving"]["autoscaling"] = {"metric": "inflight", "target": 4}
        world.apply(doc)
        hpa = wait_for(
            lambda: (
                (h := world.cluster.get("horizontalpodautoscalers", NAMESPACE, "served-runtime"))
                and h["spec"]["metrics"][0]["type"] == "Pods"
                and h
            ),
            what="the HPA patched",
        )
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "modelengine_runtime_inflight_requests"
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        writes = [w for w in _writes(world, start) if "modelengines" not in w[1]]  # the test's own apply
        assert writes == [
            ("PATCH", f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/served-runtime")
        ]

        # Removing spec.serving deletes all three.
        world.custom.patch_namespaced_custom_object(
            "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", "served", {"spec": {"serving": None}}
        )
        wait_for(lambda: not any(_serving_objects(world).values()), what="serving objects deleted")
    finally:
        operator.stop()
        world.delete("served")
