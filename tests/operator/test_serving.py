"""`spec.serving`: serving groups, their rendered objects (units) and the operator applying them.

The end-to-end scenarios run the operator against KMock with real TRT-RTX builds of the
tiny model, then check the objects in the API server: one group per GPU kind with an
engine (none for a kind without), a restart that writes nothing, a serving change that
patches, a new GPU kind that gets its group, the version gate, a stalled rollout, and
removing `spec.serving` deleting every group.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from modelengine.api.models import BackendName, EngineStatus, RolloutPhase
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.operator import serving_objects as serving
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.kube import KubeApi
from modelengine.operator.metrics import Metrics
from modelengine.operator.rollouts import Rollouts
from modelengine.operator.serving import ServingSync
from modelengine.operator.serving_groups import ServingGroup, plan_groups
from tests.operator.conftest import NAMESPACE, World
from tests.operator.harness import gpu_node, wait_for

GPU = ResolvedTarget(BackendName.TENSORRT_RTX, "8.9")
CPU = ResolvedTarget(BackendName.ONNXRUNTIME, None)
L4 = GpuKind("NVIDIA-L4", "8.9")
L4_GROUP = ServingGroup("nvidia-l4", L4, GPU, "1.7.1.116", None)
CPU_GROUP = ServingGroup("cpu", None, CPU, "1.22.0", None)


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
    dep = serving.deployment(me=me, uid="u-1", config=OperatorConfig(runtime_image="rt:1"), group=L4_GROUP)
    assert dep["metadata"]["name"] == "resnet-nvidia-l4-runtime" and dep["metadata"]["namespace"] == "ml"
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
        ("grpc", 8001),
        ("metrics", 8002),
    ]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.compute.major", "operator": "In", "values": ["8"]},
        {"key": "nvidia.com/gpu.compute.minor", "operator": "In", "values": ["9"]},
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]},
    ]
    assert dep["spec"]["selector"]["matchLabels"]["modelengine.io/serving-group"] == "nvidia-l4"
    # A rollout never takes a ready pod away before its replacement is ready.
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_the_cpu_group_runs_on_cpu_nodes_and_no_batching_is_passed() -> None:
    me = _me(image="mine:2", batching={"enabled": False}, cpu=True)
    dep = serving.deployment(me=me, uid=None, config=OperatorConfig(), group=CPU_GROUP)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in dep["spec"]["template"]["spec"]  # the server drops an empty list
    assert container["image"] == "mine:2"
    assert "--no-batching" in container["command"] and "--max-batch-size" not in container["command"]
    assert "ownerReferences" not in dep["metadata"]
    terms = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}
    ]


def test_groups_one_per_gpu_kind_with_an_engine_none_elsewhere_and_the_version_gate() -> None:
    a100, h100 = GpuKind("NVIDIA-A100", "8.0"), GpuKind("NVIDIA-H100", "9.0")
    a100_engine = ResolvedTarget(BackendName.TENSORRT_RTX, "8.0")
    released = [(GPU, "1.7.1.116"), (a100_engine, "1.7.1.116"), (CPU, "1.22.0")]
    versions = {BackendName.TENSORRT_RTX: "1.7.1.116", BackendName.ONNXRUNTIME: "1.23.1"}
    plan = plan_groups(
        _me().spec.serving, kinds=[a100, h100, L4], released=released, runtime_versions=versions
    )
    assert [(g.slug, g.target.compute_capability) for g in plan.groups] == [
        ("nvidia-a100", "8.0"),
        ("nvidia-l4", "8.9"),
    ]
    assert plan.without_engine == [h100] and plan.blocked == []
    # CPU serving only when asked for; ONNX Runtime is compatible within a major version.
    with_cpu = plan_groups(_me(cpu=True).spec.serving, kinds=[], released=released, runtime_versions=versions)
    assert [g.slug for g in with_cpu.groups] == ["cpu"]
    # An engine the serving image cannot load holds its group back, naming both versions.
    other = {BackendName.TENSORRT_RTX: "1.8.0.1", BackendName.ONNXRUNTIME: "1.23.1"}
    gated = plan_groups(_me().spec.serving, kinds=[L4], released=released, runtime_versions=other)
    assert gated.groups == []
    ((group, why),) = gated.blocked
    assert group.slug == "nvidia-l4" and "1.7.1.116" in why and "1.8.0.1" in why
    # Per-group overrides: replica bounds and resources.
    me = _me(
        minReplicas=1,
        maxReplicas=2,
        groups=[{"product": "NVIDIA-L4", "maxReplicas": 9, "resources": {"cpu": "3"}}],
    )
    (l4,) = plan_groups(me.spec.serving, kinds=[L4], released=released, runtime_versions=versions).groups
    assert serving.autoscaler(me=me, uid=None, group=l4)["spec"]["maxReplicas"] == 9
    dep = serving.deployment(me=me, uid=None, config=OperatorConfig(), group=l4)
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "3"


GEMM = "Cannot compile operation '/fc/Gemm' for Turing (SM75): FP32 GEMM is not supported"


def test_a_kind_whose_build_failed_gets_no_group_and_the_builds_reason() -> None:
    """PartiallyReady: the Ready engines get their groups; a kind whose engine failed to build
    is a kind without an engine (`NoEngine`), its status carrying the build's first line."""
    t4, h100 = GpuKind("Tesla-T4", "7.5"), GpuKind("NVIDIA-H100", "9.0")
    engines = [
        EngineStatus.model_validate(
            {
                "target": "tensorrt-rtx-cc8.9",
                "buildKey": "8" * 32,
                "phase": "Ready",
                "backend": "tensorrt-rtx",
                "backendVersion": "1.7.1.116",
                "computeCapability": "8.9",
            }
        ),
        EngineStatus.model_validate(
            {
                "target": "tensorrt-rtx-cc7.5",
                "buildKey": "7" * 32,
                "phase": "Failed",
                "backend": "tensorrt-rtx",
                "backendVersion": "1.7.1.116",
                "computeCapability": "7.5",
                "reason": f"tensorrt-rtx-cc7.5: {GEMM}\nTraceback ...",
            }
        ),
    ]
    me = _me(maxReplicas=2)
    config = OperatorConfig(runtime_backend_versions={"tensorrt-rtx": "1.7.1.116"})
    sync = ServingSync(api=cast(KubeApi, None), config=config, cache=Informers())
    metrics = Metrics()
    plan = sync.plan(me, engines, [h100, L4, t4], metrics)
    assert plan is not None
    assert [(g.slug, g.target.name) for g in plan.groups] == [("nvidia-l4", "tensorrt-rtx-cc8.9")]
    assert plan.without_engine == [h100, t4] and plan.blocked == []
    assert plan.build_failures == {t4: ("tensorrt-rtx-cc7.5", GEMM)}
    labels = {"namespace": "ml", "modelengine": "resnet"}
    assert metrics.value("modelengine_gpu_kinds_without_engine", labels) == 2
    rollouts = Rollouts(api=cast(KubeApi, None), cache=Informers())
    statuses = {s.group: s for s in asyncio.run(rollouts.statuses(("ml", "resnet"), me, plan))}
    assert statuses["nvidia-l4"].phase is RolloutPhase.PROGRESSING
    assert statuses["nvidia-l4"].deployment == "resnet-nvidia-l4-runtime"
    assert statuses["Tesla-T4"].phase is RolloutPhase.NO_ENGINE and statuses["Tesla-T4"].deployment is None
    assert statuses["Tesla-T4"].reason == (
        f"no engine for Tesla-T4 (7.5): no pods there; the build of tensorrt-rtx-cc7.5 failed: {GEMM}"
    )
    assert statuses["NVIDIA-H100"].reason == "no engine for NVIDIA-H100 (9.0): no pods there"

    # A failed engine pinned to a product whose kind another engine serves: nothing to report.
    pinned = ResolvedTarget(BackendName.TENSORRT_RTX, "8.9", "NVIDIA-L4")
    served = plan_groups(
        me.spec.serving,
        kinds=[L4, t4],
        released=[(GPU, "1.7.1.116")],
        runtime_versions={BackendName.TENSORRT_RTX: "1.7.1.116"},
        failed=[(pinned, "boom"), (ResolvedTarget(BackendName.TENSORRT_RTX, "7.5"), GEMM)],
    )
    assert [g.slug for g in served.groups] == ["nvidia-l4"]
    assert served.build_failures == {t4: ("tensorrt-rtx-cc7.5", GEMM)}


def test_service_and_hpa_per_metric() -> None:
    svc = serving.service(me=_me(), uid="u")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    ]
    assert svc["spec"]["selector"] == {
        "modelengine.io/name": "resnet",
        "app.kubernetes.io/component": "runtime",
    }

    hpa = serving.autoscaler(
        me=_me(minReplicas=2, maxReplicas=6, autoscaling={"metric": "cpu", "target": 60}),
        uid="u",
        group=L4_GROUP,
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "resnet-nvidia-l4-runtime",
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
        hpa = serving.autoscaler(me=_me(autoscaling={"metric": metric, "target": 8}), uid="u", group=L4_GROUP)
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
#
# The operator runs as the chart's ServiceAccount (helm template: default values, plus the
# store Secret by name), so the fake API refuses with 403 whatever the chart does not grant.

CHART_VALUES = {"rbac": {"secretNames": ["store-credentials"]}}


@pytest.fixture(scope="module")
def chart(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig of the chart's ServiceAccount, its RBAC loaded into the fake API."""
    from tests.helm.test_chart import HELM, render

    if HELM is None:
        pytest.skip("no helm binary to render the chart's RBAC: run scripts/get-helm.sh")
    return world.cluster.chart_kubeconfig(render(tmp_path_factory.mktemp("chart"), CHART_VALUES))


def _refused(world: World) -> list[str]:
    """Every request of the operator the chart's RBAC refused (none, or the chart lacks a rule)."""
    return [f"{a.verb} {a.combined_resource} {a.namespace}/{a.name}" for a in world.cluster.kmock.denied]


def _writes(world: World, start: int) -> list[tuple[str, str]]:
    out = []
    for request in world.cluster.requests()[start:]:
        agent = request.headers.get("User-Agent", "")
        if not (agent.startswith("test-operator-") or agent.startswith("kopf/")):
            continue  # the test's own requests and the test node's (it runs the serving pods)
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method.endswith(("POST", "PATCH", "PUT", "DELETE")):
            out.append((method, request.url.path))
    return out


def _group_objects(world: World, group: str, me: str = "served") -> dict[str, dict[str, Any] | None]:
    name = f"{me}-{group}-runtime"
    return {
        plural: world.cluster.get(plural, NAMESPACE, name)
        for plural in ("deployments", "horizontalpodautoscalers", "poddisruptionbudgets")
    }


def _deployments(world: World) -> list[str]:
    return sorted(d["metadata"]["name"] for d in world.cluster.objects("deployments", NAMESPACE))


def _groups(world: World, me: str = "served") -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in world.status(me).get("serving") or []}


def test_serving_groups_follow_the_modelengine_and_the_cluster(world: World, chart: Path) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(world.core.api_client)
    doc = world.modelengine(
        "served",
        # Engines for L4 (8.9) and A100 (8.0); 12.0 has no Node yet; A10 and H100 no engine.
        targets=[{"computeCapability": "8.9"}, {"computeCapability": "8.0"}, {"computeCapability": "12.0"}],
        serving={"minReplicas": 1, "maxReplicas": 3, "autoscaling": {"metric": "cpu", "target": 50}},
    )
    # No batching of progress-only status writes: nothing is left pending when it stops.
    operator = world.operator(
        kubeconfig=chart, options={"runtime_image": "runtime:test", "status_interval_seconds": 0}
    )
    try:
        world.apply(doc)
        wait_for(
            lambda: world.status("served").get("phase") == "Ready",
            timeout=180,
            what="Ready",
            show=lambda: world.status("served"),
        )
        groups = ("nvidia-l4", "nvidia-a100-sxm4-80gb")
        objs: dict[str, dict[str, dict[str, Any] | None]] = {}
        for g in groups:
            objs[g] = wait_for(
                lambda g=g: all(_group_objects(world, g).values()) and _group_objects(world, g),  # type: ignore[misc]
                what=g,
            )
        assert _deployments(world) == sorted(f"served-{g}-runtime" for g in groups)  # exactly two groups
        svc = wait_for(lambda: world.cluster.get("services", NAMESPACE, "served-runtime"), what="Service")
        assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8001, 8002]
        uid = world.cluster.get("modelengines", NAMESPACE, "served")["metadata"]["uid"]  # type: ignore[index]
        for group, parts in objs.items():
            dep = parts["deployments"]
            assert dep is not None
            for obj in parts.values():
                assert obj is not None and obj["metadata"]["ownerReferences"][0]["uid"] == uid
            pod = dep["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            assert container["image"] == "runtime:test" and container["command"][:2] == [
                "modelengine",
                "serve",
            ]
            assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
            product = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert {
                "key": "nvidia.com/gpu.product",
                "operator": "In",
                "values": [product_of(group)],
            } in product["nodeSelectorTerms"][0]["matchExpressions"]
            assert parts["horizontalpodautoscalers"]["spec"]["maxReplicas"] == 3  # type: ignore[index]
        status = wait_for(lambda: len(_groups(world)) == 4 and _groups(world), what="serving status")
        assert {g for g, v in status.items() if v["phase"] == "NoEngine"} == {
            "NVIDIA-A10",
            "NVIDIA-H100-80GB-HBM3",
        }
        assert "no engine for NVIDIA-H100-80GB-HBM3 (9.0)" in status["NVIDIA-H100-80GB-HBM3"]["reason"]
        assert (
            operator.controller.metrics.value(
                "modelengine_gpu_kinds_without_engine", {"namespace": NAMESPACE, "modelengine": "served"}
            )
            == 2
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
    finally:
        operator.stop()

    # A restarted operator reads the objects, finds them as rendered, and writes nothing.
    start = len(world.cluster.requests())
    operator = world.operator(kubeconfig=chart, options={"runtime_image": "runtime:test"})
    try:
        wait_for(
            lambda: operator.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) >= 1,
            what="the initial reconciles",
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        assert _writes(world, start) == []

        # A serving change patches each group's HPA in place, nothing else.
        start = len(world.cluster.requests())
        doc["spec"]["serving"]["autoscaling"] = {"metric": "inflight", "target": 4}
        world.apply(doc)
        wait_for(
            lambda: all(
                (h := world.cluster.get("horizontalpodautoscalers", NAMESPACE, f"served-{g}-runtime"))
                and h["spec"]["metrics"][0]["type"] == "Pods"
                for g in ("nvidia-l4", "nvidia-a100-sxm4-80gb")
            ),
            what="the HPAs patched",
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        writes = [w for w in _writes(world, start) if "modelengines" not in w[1]]  # the test's own apply
        assert sorted(writes) == sorted(
            (
                "PATCH",
                f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/served-{g}-runtime",
            )
            for g in ("nvidia-l4", "nvidia-a100-sxm4-80gb")
        )

        # A node pool of a new kind whose engine is already built gets its group.
        world.core.create_node(gpu_node("gpu-rtx-0", "NVIDIA-RTX-PRO-6000", "12.0", family="blackwell"))
        wait_for(lambda: "served-nvidia-rtx-pro-6000-runtime" in _deployments(world), what="a third group")

        # The Deployment controller reports a rollout past its deadline: the group is Stalled,
        # said in status, a condition and an Event; the old pods are left alone.
        name = "served-nvidia-l4-runtime"
        generation = world.cluster.get("deployments", NAMESPACE, name)["metadata"]["generation"]  # type: ignore[index]
        apps.patch_namespaced_deployment_status(
            name,
            NAMESPACE,
            {
                "status": {
                    "observedGeneration": generation,
                    "replicas": 2,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                    "updatedReplicas": 1,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": f'ReplicaSet "{name}-7d9f" has timed out progressing.',
                        }
                    ],
                }
            },
        )
        stalled = wait_for(
            lambda: _groups(world).get("nvidia-l4", {}).get("phase") == "Stalled" and world.status("served"),
            what="Stalled",
        )
        conditions = {c["type"]: c for c in stalled["conditions"]}
        assert conditions["RolloutStalled"]["status"] == "True"
        # The reason is the runtime's own, read from the not-ready pod: the test node runs
        # this GPU group's pod on a machine without a GPU, so its runtime finds no engine.
        assert conditions["RolloutStalled"]["message"].startswith(
            "NVIDIA-L4: no engine of default/served fits"
        )
        events = wait_for(
            lambda: [e for e in world.events("served") if e["reason"] == "RolloutStalled"], what="an Event"
        )
        assert events[0]["type"] == "Warning" and "NVIDIA-L4" in events[0]["message"]

        # Removing spec.serving deletes every group and the Service.
        world.custom.patch_namespaced_custom_object(
            "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", "served", {"spec": {"serving": None}}
        )
        wait_for(lambda: not _deployments(world), what="every group deleted")
        wait_for(
            lambda: world.cluster.get("services", NAMESPACE, "served-runtime") is None, what="Service deleted"
        )
        assert not world.cluster.objects("poddisruptionbudgets", NAMESPACE)
        assert not world.cluster.objects("horizontalpodautoscalers", NAMESPACE)
        assert _refused(world) == []  # the chart granted every call the operator made
    finally:
        operator.stop()
        world.delete("served")
        if world.cluster.get("nodes", None, "gpu-rtx-0") is not None:
            world.core.delete_node("gpu-rtx-0")


def test_the_version_gate_holds_back_an_engine_the_serving_image_cannot_load(
    world: World, chart: Path
) -> None:
    doc = world.modelengine("gated", targets=[{"computeCapability": "8.9"}], serving={"maxReplicas": 2})
    operator = world.operator(
        kubeconfig=chart, options={"runtime_backend_versions": {"tensorrt-rtx": "1.0.0.1"}}
    )
    try:
        world.apply(doc)
        status = wait_for(
            lambda: (
                (world.status("gated").get("phase") == "Ready")
                and any(
                    c["type"] == "VersionMismatch" and c["status"] == "True"
                    for c in world.status("gated")["conditions"]
                )
                and world.status("gated")
            ),
            timeout=120,
            what="VersionMismatch",
        )
        mismatch = {c["type"]: c for c in status["conditions"]}["VersionMismatch"]
        built = status["engines"][0]["backendVersion"]
        assert built in mismatch["message"] and "1.0.0.1" in mismatch["message"]
        (group,) = [g for g in status["serving"] if g["phase"] != "NoEngine"]
        assert group["phase"] == "VersionMismatch"
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        assert not [
            d
            for d in world.cluster.objects("deployments", NAMESPACE)
            if d["metadata"]["name"].startswith("gated-")
        ]
        assert _refused(world) == []  # the chart granted every call the operator made
    finally:
        operator.stop()
        world.delete("gated")


def product_of(group: str) -> str:
    return {"nvidia-l4": "NVIDIA-L4", "nvidia-a100-sxm4-80gb": "NVIDIA-A100-SXM4-80GB"}[group]


def test_a_stalled_rollout_reports_the_runtimes_own_reason(world: World, chart: Path) -> None:
    """A new pod whose engine fails acceptance never turns ready; once the Deployment
    controller gives up (ProgressDeadlineExceeded), status says why in the runtime's words."""
    from kubernetes import client

    from modelengine.store.publish import read_manifest
    from modelengine.store.s3 import S3Store, s3_client
    from tests.operator.conftest import CREDENTIALS
    from tests.runtime.test_acceptance import perturb_golden

    apps = client.AppsV1Api(world.core.api_client)
    doc = world.modelengine("accept", targets=[{"cpu": True}], serving={"cpu": True, "maxReplicas": 1})
    name = "accept-cpu-runtime"
    operator = world.operator(kubeconfig=chart, options={"status_interval_seconds": 0})
    try:
        world.apply(doc)
        status = wait_for(
            lambda: world.status("accept").get("phase") == "Ready" and world.status("accept"), timeout=180
        )

        def ready() -> int:
            status = (world.cluster.get("deployments", NAMESPACE, name) or {}).get("status") or {}
            return int(status.get("readyReplicas") or 0)

        wait_for(lambda: ready() >= 1, timeout=120, what="the first pod ready (acceptance passed)")
        # The engine's golden outputs no longer match what it computes (a consistent, signed-off
        # document with wrong numbers: what a bad engine looks like to the runtime).
        store = S3Store(
            world.bucket,
            "store",
            client=s3_client(endpoint_url=world.endpoint, credentials=CREDENTIALS),
        )
        (engine,) = status["engines"]
        manifest = read_manifest(store, engine["buildKey"])
        assert manifest is not None and manifest.golden is not None
        perturb_golden(store, manifest, manifest.golden.samples[0].label)
        # A template change rolls out a new pod, which loads the engine and fails acceptance.
        doc["spec"]["serving"]["batching"] = {"maxDelayMs": 3}
        world.apply(doc)
        dep = wait_for(
            lambda: (
                (d := world.cluster.get("deployments", NAMESPACE, name))
                and d["metadata"]["generation"] >= 2
                and d
            ),
            what="the new template",
        )

        def pods() -> list[dict[str, Any]]:
            return [
                p
                for p in world.cluster.objects("pods", NAMESPACE)
                if p["metadata"]["labels"].get("modelengine.io/serving-group") == "cpu"
                and p["metadata"]["labels"].get("modelengine.io/name") == "accept"
            ]

        wait_for(lambda: pods() and world.node.serving[(NAMESPACE, name)].generation >= 2, what="the new pod")
        time.sleep(3)  # its runtime loads the engine and runs the golden samples
        apps.patch_namespaced_deployment_status(
            name,
            NAMESPACE,
            {
                "status": {
                    "observedGeneration": dep["metadata"]["generation"],
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 0,
                    "availableReplicas": 0,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": f'ReplicaSet "{name}-2" has timed out progressing.',
                        }
                    ],
                }
            },
        )
        group = wait_for(
            lambda: next(
                (
                    g
                    for g in world.status("accept").get("serving") or []
                    if g["group"] == "cpu" and g["phase"] == "Stalled"
                ),
                None,
            ),
            what="Stalled",
            show=lambda: world.status("accept").get("serving"),
        )
        assert "failed acceptance" in group["reason"] and "golden sample" in group["reason"], (
            group,
            world.node.serving_log(NAMESPACE, name)[-3000:],
        )
        conditions = {c["type"]: c for c in world.status("accept")["conditions"]}
        assert conditions["RolloutStalled"]["status"] == "True"
        assert conditions["RolloutStalled"]["message"].startswith("cpu: ")
        events = wait_for(
            lambda: [e for e in world.events("accept") if e["reason"] == "RolloutStalled"], what="Event"
        )
        assert "failed acceptance" in events[0]["message"]
        assert _refused(world) == []  # the chart granted every call the operator made
    finally:
        operator.stop()
        world.delete("accept")


def _release(world: World, name: str) -> Any:
    from modelengine.store.publish import read_release
    from modelengine.store.s3 import S3Store, s3_client
    from tests.operator.conftest import CREDENTIALS

    store = S3Store(
        world.bucket, "store", client=s3_client(endpoint_url=world.endpoint, credentials=CREDENTIALS)
    )
    return read_release(store, NAMESPACE, name)


def _versions(world: World, deployments: list[str]) -> dict[str, str]:
    """Each Deployment's resourceVersion (unchanged: nothing wrote it)."""
    out = {}
    for name in deployments:
        dep = world.cluster.get("deployments", NAMESPACE, name)
        assert dep is not None, name
        out[name] = str(dep["metadata"]["resourceVersion"])
    return out


def _ready_doc(world: World, deployment: str) -> dict[str, Any]:
    """What the serving pod's runtime answers on /v2/health/ready."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{world.node.serving_port(NAMESPACE, deployment)}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            doc: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as err:
        doc = json.loads(err.read())
    return doc


def test_a_partially_ready_modelengine_serves_its_ready_engines(world: World, chart: Path) -> None:
    """One GPU kind's build fails (a real TRT-RTX refusal: no FP32 GEMM on Turing): the others
    are released and served, the failed kind gets no pods and says why; removing the failed
    target makes it Ready with the same serving objects, untouched."""
    # A Turing node pool: TRT-RTX 1.7 cannot compile the tiny model's FP32 GEMM for 7.5.
    world.core.create_node(gpu_node("gpu-t4-0", "Tesla-T4", "7.5", family="turing"))
    doc = world.modelengine(
        "partial",
        opt=8,  # keys no other test builds
        targets=[{"computeCapability": "8.9"}, {"computeCapability": "7.5"}, {"cpu": True}],
        serving={"cpu": True, "maxReplicas": 2},
    )
    groups = ("nvidia-l4", "cpu")
    operator = world.operator(
        kubeconfig=chart, options={"runtime_image": "runtime:test", "status_interval_seconds": 0}
    )
    try:
        world.apply(doc)
        status = wait_for(
            lambda: world.status("partial").get("phase") == "PartiallyReady" and world.status("partial"),
            timeout=180,
            what="PartiallyReady",
            show=lambda: world.status("partial"),
        )
        engines = {e["target"]: e for e in status["engines"]}
        assert {t: e["phase"] for t, e in engines.items()} == {
            "tensorrt-rtx-cc8.9": "Ready",
            "tensorrt-rtx-cc7.5": "Failed",
            "onnxruntime-cpu": "Ready",
        }
        assert "FP32 GEMM is not supported" in engines["tensorrt-rtx-cc7.5"]["reason"]
        assert status["targetsReady"] == "2/3"
        conditions = {c["type"]: c for c in status["conditions"]}
        assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "PartiallyReady")
        assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == ("True", "BuildFailed")
        assert conditions["Stalled"]["message"].startswith("tensorrt-rtx-cc7.5: ")
        assert conditions["Reconciling"]["status"] == "False"

        # The release record holds the two Ready engines, and nothing of the failed one.
        record = wait_for(lambda: _release(world, "partial"), what="the release record")
        assert record.generation == 1
        assert [(e.target, e.build_key) for e in record.engines] == [
            ("onnxruntime-cpu", engines["onnxruntime-cpu"]["buildKey"]),
            ("tensorrt-rtx-cc8.9", engines["tensorrt-rtx-cc8.9"]["buildKey"]),
        ]

        # A group for the Ready GPU kind and the CPU group; none for the Turing kind.
        for g in groups:
            wait_for(lambda g=g: all(_group_objects(world, g, "partial").values()), what=g)  # type: ignore[misc]
        assert [d for d in _deployments(world) if d.startswith("partial-")] == sorted(
            f"partial-{g}-runtime" for g in groups
        )
        wait_for(lambda: world.cluster.get("services", NAMESPACE, "partial-runtime"), what="Service")
        # The CPU pod's runtime reads the record, finds its engine and turns ready.
        wait_for(
            lambda: (
                int(
                    (
                        (world.cluster.get("deployments", NAMESPACE, "partial-cpu-runtime") or {}).get(
                            "status"
                        )
                        or {}
                    ).get("readyReplicas")
                    or 0
                )
                >= 1
            ),
            timeout=120,
            what="the CPU group's pod ready",
        )
        ready = _ready_doc(world, "partial-cpu-runtime")
        assert ready["ready"] is True and ready["release_generation"] == 1
        assert ready["engine"]["target"] == "onnxruntime-cpu"

        serving = wait_for(
            lambda: len(_groups(world, "partial")) == 6 and _groups(world, "partial"), what="serving status"
        )
        assert serving["nvidia-l4"]["engine"] == "tensorrt-rtx-cc8.9"
        assert serving["cpu"]["engine"] == "onnxruntime-cpu"
        assert {g for g, v in serving.items() if v["phase"] == "NoEngine"} == {
            "Tesla-T4",
            "NVIDIA-A100-SXM4-80GB",
            "NVIDIA-A10",
            "NVIDIA-H100-80GB-HBM3",
        }
        t4 = serving["Tesla-T4"]
        assert "deployment" not in t4 or t4["deployment"] is None
        assert t4["reason"].startswith(
            "no engine for Tesla-T4 (7.5): no pods there; the build of tensorrt-rtx-cc7.5 failed: "
        )
        assert "FP32 GEMM is not supported" in t4["reason"]
        assert serving["NVIDIA-A10"]["reason"] == "no engine for NVIDIA-A10 (8.6): no pods there"
        # Both groups' pods run on the test node (no GPU: the L4 group's runtime falls back to
        # the CPU engine) and roll out; then nothing is left to change.
        wait_for(
            lambda: all(_groups(world, "partial")[g]["phase"] == "RolledOut" for g in groups),
            timeout=120,
            what="both groups rolled out",
            show=lambda: _groups(world, "partial"),
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        served = _versions(world, [f"partial-{g}-runtime" for g in groups])

        # The spec fixed (the Turing target removed): Ready, the same release and serving,
        # and no serving object written.
        start = len(world.cluster.requests())
        doc["spec"]["targets"] = [{"computeCapability": "8.9"}, {"cpu": True}]
        world.apply(doc)
        status = wait_for(
            lambda: (
                world.status("partial").get("phase") == "Ready"
                and world.status("partial").get("observedGeneration") == 2
                and world.status("partial")
            ),
            timeout=60,
            what="Ready at generation 2",
            show=lambda: world.status("partial"),
        )
        assert status["targetsReady"] == "2/2"
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True" and conditions["Stalled"]["status"] == "False"
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        record = wait_for(
            lambda: (r := _release(world, "partial")) and r.generation == 2 and r, what="generation 2"
        )
        assert [e.target for e in record.engines] == ["onnxruntime-cpu", "tensorrt-rtx-cc8.9"]
        assert [d for d in _deployments(world) if d.startswith("partial-")] == sorted(
            f"partial-{g}-runtime" for g in groups
        )
        assert _versions(world, [f"partial-{g}-runtime" for g in groups]) == served  # untouched
        serving = _groups(world, "partial")
        assert serving["Tesla-T4"]["reason"] == "no engine for Tesla-T4 (7.5): no pods there"
        writes = _writes(world, start)
        # The failed target's Job is superseded, the status turns Ready (and says so in an
        # Event): nothing else, no serving object, no new Job.
        failed_job = "me-build-" + engines["tensorrt-rtx-cc7.5"]["buildKey"][:20]
        assert sorted(writes) == [
            ("DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{failed_job}"),
            ("PATCH", f"/apis/modelengine.io/v1alpha1/namespaces/{NAMESPACE}/modelengines/partial/status"),
            ("POST", f"/api/v1/namespaces/{NAMESPACE}/events"),
        ]
        assert _refused(world) == []  # the chart granted every call the operator made
    finally:
        operator.stop()
        world.delete("partial")
        world.core.delete_node("gpu-t4-0")
