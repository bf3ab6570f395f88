"""End to end: kopf operator + KMock API + the real builder (subprocesses) + moto S3.

The scenarios run in file order and share one cluster and bucket (see conftest.py):
engines the first scenario builds are the cache hits of later ones, which keeps the
whole file to a handful of real TRT-RTX builds.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any, cast

import boto3
import kopf
import pytest
from kopf._core.engines import posting as kopf_posting

from modelengine.operator import nodes
from tests.conftest import free_port
from tests.operator.conftest import CREDENTIALS, NAMESPACE, World
from tests.operator.harness import gpu_node, wait_for


def _s3(world: World) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=world.endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def _release(world: World, name: str) -> dict[str, Any] | None:
    try:
        body = _s3(world).get_object(Bucket=world.bucket, Key=f"store/releases/{NAMESPACE}/{name}.json")[
            "Body"
        ]
    except Exception:
        return None
    doc: dict[str, Any] = json.loads(body.read())
    return doc


def _phase(world: World, name: str, phase: str) -> Any:
    return lambda: world.status(name).get("phase") == phase and world.status(name)


def _requests_for(world: World, start: int, name: str) -> list[Any]:
    """The operator's write requests since `start` that concern ModelEngine `name`."""
    out = []
    for request in world.cluster.requests()[start:]:
        agent = request.headers.get("User-Agent", "")
        if not (agent.startswith("test-operator-") or agent.startswith("kopf/")):
            continue  # the test's own requests and the test node's
        path = request.url.path
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method == "GET":
            continue
        body = request.data if isinstance(request.data, dict) else {}
        about = json.dumps(body)
        if f"/modelengines/{name}" in path or f'"{name}"' in about:
            out.append((method, path))
    return out


def test_auto_targets_build_every_gpu_kind_and_write_the_release(world: World) -> None:
    # Progress-only status writes are batched per interval; a long one makes the count exact.
    operator = world.operator(options={"status_interval_seconds": 60})
    try:
        # A new model is resolved once (one shared resolve Job: digest + ONNX + source record);
        # the counts below are those of a first build of a resolved model.
        world.apply(world.modelengine("warm-up", targets=[{"cpu": True}]))
        resolving = wait_for(
            lambda: (
                world.status("warm-up").get("message", "").startswith("resolving the model source")
                and world.status("warm-up")
            ),
            what="resolving",
        )
        assert resolving["phase"] == "Pending"
        resolve_jobs = world.jobs("warm-up", resolve=True)
        assert (
            len(resolve_jobs) == 1
            and "--resolve" in resolve_jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"]
        )
        wait_for(_phase(world, "warm-up", "Ready"), timeout=120, what="warm-up Ready")
        start = len(world.cluster.requests())
        world.apply(world.modelengine("resnet-auto"))
        jobs = wait_for(
            lambda: len(world.jobs("resnet-auto")) == 3 and world.jobs("resnet-auto"), what="3 Jobs"
        )
        targets = sorted(j["metadata"]["labels"]["modelengine.io/target"] for j in jobs)
        assert targets == ["tensorrt-rtx-cc8.0", "tensorrt-rtx-cc8.6", "tensorrt-rtx-cc8.9"]
        for job in jobs:
            pod = job["spec"]["template"]["spec"]
            container = pod["containers"][0]
            # TRT-RTX builds ahead of time on CPU nodes: no GPU asked for, GPU nodes avoided.
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
            terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
                {"key": nodes.PRESENT, "operator": "DoesNotExist"}
            ]
            assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
            assert "testing-secret-key" not in json.dumps(job)
            assert container["securityContext"]["runAsNonRoot"] is True
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelEngine"
            assert (
                job["metadata"]["name"]
                == "me-build-" + job["metadata"]["labels"]["modelengine.io/build-key"][:20]
            )

        status = wait_for(_phase(world, "resnet-auto", "Ready"), timeout=120, what="Ready")
        assert status["targetsReady"] == "3/3"
        assert status["observedGeneration"] == 1
        engines = {e["target"]: e for e in status["engines"]}
        assert set(engines) == set(targets)
        for engine in engines.values():
            assert engine["phase"] == "Ready" and engine["cached"] is False
            assert engine["uri"].startswith(f"s3://{world.bucket}/store/engines/{engine['buildKey']}/")
            assert len(engine["sha256"]) == 64 and engine["size"] > 0
        assert (
            "NVIDIA-H100-80GB-HBM3 (compute capability 9.0): tensorrt-rtx cannot target it"
            in status["message"]
        )
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["observedGeneration"] == 1

        release = _release(world, "resnet-auto")
        assert release is not None
        assert sorted(e["target"] for e in release["engines"]) == targets
        assert {e["sha256"] for e in release["engines"]} == {e["sha256"] for e in engines.values()}

        reasons = wait_for(
            lambda: (
                len(world.events("resnet-auto")) >= 2 and [e["reason"] for e in world.events("resnet-auto")]
            )
        )
        assert reasons == ["Building", "Ready"]
        writes = _requests_for(world, start, "resnet-auto")
        creates = [w for w in writes if w[0] == "POST" and w[1].endswith("/jobs")]
        patches = [w for w in writes if w[0] == "PATCH"]
        assert len(creates) == 3
        assert len(patches) == 2, writes  # Building, then Ready
        assert len(writes) == 7, (
            writes
        )  # 3 Job creates + 2 status patches + 2 Events (budget: 8) # Building, then Ready: progress in between is batched
        assert (
            operator.controller.metrics.value("modelengine_builds_succeeded_total", {"target": targets[0]})
            == 1
        )
    finally:
        operator.stop()


def test_reapplying_an_unchanged_modelengine_is_ready_from_the_cache(world: World) -> None:
    operator = world.operator()
    try:
        jobs_before = len(world.jobs())
        world.apply(world.modelengine("resnet-again"))
        status = wait_for(_phase(world, "resnet-again", "Ready"), timeout=10, what="Ready from cache")
        assert len(world.jobs()) == jobs_before
        assert all(e["cached"] is True and e.get("jobName") is None for e in status["engines"])
        assert status["targetsReady"] == "3/3"
        assert operator.controller.metrics.value("modelengine_cache_hits_total") == 3
    finally:
        operator.stop()


def test_restart_with_everything_ready_makes_no_writes(world: World) -> None:
    start = len(world.cluster.requests())
    operator = world.operator()
    try:
        wait_for(
            lambda: operator.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) >= 2,
            what="the initial reconciles",
        )
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
    finally:
        operator.stop()
    writes = [
        r
        for r in world.cluster.requests()[start:]
        if str(r.method).upper().endswith(("POST", "PATCH", "PUT", "DELETE"))
    ]
    assert writes == []


def test_a_builder_failure_reports_the_builders_own_reason(world: World) -> None:
    operator = world.operator()
    try:
        world.apply(
            world.modelengine("broken", entrypoint="tiny:broken", targets=[{"computeCapability": "8.9"}])
        )
        # The model is loaded and exported once, by the resolve Job: a broken factory fails
        # there, before any per-target build starts, with the builder's own reason.
        status = wait_for(_phase(world, "broken", "Failed"), timeout=120, what="Failed")
        assert not status.get("engines")
        assert world.jobs("broken") == [] and len(world.jobs("broken", resolve=True)) == 1
        failed = {c["type"]: c for c in status["conditions"]}["Failed"]
        assert failed["status"] == "True" and failed["reason"] == "ResolveFailed"
        assert "factory exploded" in failed["message"] and "BackoffLimitExceeded" not in failed["message"]
        assert status["message"].startswith("spec.model.source file://")
        warnings = wait_for(
            lambda: [e for e in world.events("broken") if e["type"] == "Warning"], what="a Warning"
        )
        assert "factory exploded" in warnings[-1]["message"]
    finally:
        operator.stop()


def test_invalid_modelengines_fail_with_the_validators_lines_and_no_job(world: World) -> None:
    operator = world.operator()
    try:
        jobs_before = len(world.jobs())
        semantic = world.modelengine("bad-shapes", targets=[{"computeCapability": "9.0"}])
        semantic["spec"]["export"]["inputs"][0].pop("opt")
        world.apply(semantic)
        schema = world.modelengine("bad-enum")
        schema["spec"]["build"]["precision"] = "fp64"
        world.apply(schema)
        status = wait_for(_phase(world, "bad-shapes", "Failed"), what="Failed (semantic)")
        message = {c["type"]: c for c in status["conditions"]}["Failed"]["message"]
        assert "spec.export.inputs[0]: dynamic shape [-1, 8] needs opt" in message
        assert "spec.targets[0].computeCapability: tensorrt-rtx cannot target 9.0" in message
        status = wait_for(_phase(world, "bad-enum", "Failed"), what="Failed (schema)")
        assert "spec.build.precision: must be one of" in status["message"]
        assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "InvalidSpec"
        wait_for(
            lambda: any(e["reason"] == "InvalidSpec" for e in world.events("bad-shapes")), what="an Event"
        )
        assert len(world.jobs()) == jobs_before
    finally:
        operator.stop()


def test_a_new_gpu_kind_gets_exactly_one_new_job_and_a_vanished_one_is_orphaned(world: World) -> None:
    operator = world.operator()
    try:
        wait_for(_phase(world, "resnet-auto", "Ready"), what="Ready")
        jobs_before = {j["metadata"]["name"] for j in world.jobs()}
        world.core.create_node(
            gpu_node("gpu-rtx5090-0", "NVIDIA-GeForce-RTX-5090", "12.0", family="blackwell")
        )
        new = wait_for(
            lambda: [j for j in world.jobs() if j["metadata"]["name"] not in jobs_before], what="a new Job"
        )
        status = wait_for(
            lambda: world.status("resnet-auto").get("targetsReady") == "4/4" and world.status("resnet-auto"),
            timeout=120,
            what="4/4",
            show=lambda: world.status("resnet-auto"),
        )
        assert status["phase"] == "Ready"
        # Both ModelEngines with auto targets want the new kind; one key, one Job.
        assert len([j for j in world.jobs() if j["metadata"]["name"] not in jobs_before]) == 1
        assert new[0]["metadata"]["labels"]["modelengine.io/target"] == "tensorrt-rtx-cc12.0"
        wait_for(lambda: world.status("resnet-again").get("targetsReady") == "4/4", what="shared key reused")

        world.core.delete_node("gpu-a10-0")
        status = wait_for(
            lambda: world.status("resnet-auto").get("targetsReady") == "3/3" and world.status("resnet-auto"),
            what="3/3 after node removal",
        )
        orphaned = [e for e in status["engines"] if e["phase"] == "Orphaned"]
        assert [e["target"] for e in orphaned] == ["tensorrt-rtx-cc8.6"]
        assert "tensorrt-rtx-cc8.6: Orphaned" in status["message"]
        assert status["phase"] == "Ready"
    finally:
        operator.stop()


def test_killing_the_operator_mid_build_starts_no_duplicate(world: World) -> None:
    world.node.gate.clear()
    first = world.operator()
    doc = world.modelengine(
        "restart", targets=[{"computeCapability": "8.9"}, {"computeCapability": "8.0"}], opt=2
    )
    try:
        world.apply(doc)
        wait_for(lambda: len(world.jobs("restart")) == 2, what="2 Jobs")
        wait_for(_phase(world, "restart", "Building"), what="Building")
    finally:
        first.stop()
    start = len(world.cluster.requests())
    second = world.operator()
    try:
        world.node.gate.set()
        status = wait_for(_phase(world, "restart", "Ready"), timeout=120, what="Ready after restart")
        assert status["targetsReady"] == "2/2"
        assert len(world.jobs("restart")) == 2
        posts = [
            r
            for r in world.cluster.requests()[start:]
            if r.url.path.endswith("/jobs") and "POST" in str(r.method).upper()
        ]
        assert posts == [], [
            (r.headers.get("User-Agent"), (r.data or {}).get("metadata", {}).get("name")) for r in posts
        ]
    finally:
        world.node.gate.set()
        second.stop()


def test_api_errors_and_slowness_converge_without_loss(world: World) -> None:
    jobs_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    status_path = f"/apis/modelengine.io/v1alpha1/namespaces/{NAMESPACE}/modelengines/flaky/status"

    async def slow() -> None:
        await asyncio.sleep(2)

    # KMock stores the object even when its reaction answers 500: the retry meets a 409.
    world.cluster.inject(lambda k: k[f"post {jobs_path}"][:2] << 500)
    world.cluster.inject(lambda k: k[f"patch {status_path}"][:2] << 500)
    world.cluster.inject(lambda k: k[f"patch {status_path}"][2:3] << (lambda: slow()))
    operator = world.operator()
    try:
        world.apply(world.modelengine("flaky", targets=[{"computeCapability": "8.6"}], opt=3))
        status = wait_for(_phase(world, "flaky", "Ready"), timeout=120, what="Ready despite faults")
        assert len(world.jobs("flaky")) == 1
        assert status["engines"][0]["phase"] == "Ready"
        assert operator.controller.metrics.value("modelengine_reconciles_total", {"result": "retry"}) >= 2
    finally:
        operator.stop()


def test_spec_change_rebuilds_only_changed_keys_and_cleans_superseded_jobs(world: World) -> None:
    operator = world.operator()
    try:
        # Full TensorRT: GPU Jobs pinned to the GPU kind; nothing runs them here, they stay pending.
        doc = world.modelengine(
            "gpu-pinned", targets=[{"computeCapability": "8.0"}, {"product": "NVIDIA-L4"}]
        )
        doc["spec"]["build"]["backend"] = "tensorrt"
        world.apply(doc)
        jobs = wait_for(
            lambda: len(world.jobs("gpu-pinned")) == 2 and world.jobs("gpu-pinned"), what="2 GPU Jobs"
        )
        by_target = {j["metadata"]["labels"]["modelengine.io/target"]: j for j in jobs}
        l4 = by_target["tensorrt-cc8.9-nvidia-l4"]["spec"]["template"]["spec"]
        assert l4["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert l4["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        match = l4["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert match["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": nodes.MAJOR, "operator": "In", "values": ["8"]},
            {"key": nodes.MINOR, "operator": "In", "values": ["9"]},
            {"key": nodes.PRODUCT, "operator": "In", "values": ["NVIDIA-L4"]},
        ]
        a100 = by_target["tensorrt-cc8.0"]
        doc["spec"]["targets"] = [{"product": "NVIDIA-L4"}, {"computeCapability": "8.6"}]
        world.apply(doc)
        wait_for(
            lambda: world.cluster.get("jobs", NAMESPACE, a100["metadata"]["name"]) is None,
            what="superseded Job deleted",
        )
        names = {j["metadata"]["name"] for j in world.jobs("gpu-pinned")}
        assert names == {
            by_target["tensorrt-cc8.9-nvidia-l4"]["metadata"]["name"],
            next(
                j["metadata"]["name"]
                for j in world.jobs("gpu-pinned")
                if j["metadata"]["labels"]["modelengine.io/target"] == "tensorrt-cc8.6"
            ),
        }
        status = wait_for(
            lambda: world.status("gpu-pinned").get("observedGeneration") == 2 and world.status("gpu-pinned"),
            what="generation 2 observed",
        )
        assert status["phase"] == "Building"
        world.delete("gpu-pinned")
        wait_for(lambda: not world.jobs("gpu-pinned"), what="its Jobs gone")
    finally:
        operator.stop()


def test_build_limits_queue_targets_until_a_slot_frees(world: World) -> None:
    world.node.gate.clear()
    operator = world.operator(options={"max_builds": 1})
    try:
        world.apply(
            world.modelengine(
                "queued", targets=[{"computeCapability": "8.6"}, {"computeCapability": "8.0"}], opt=5
            )
        )
        status = wait_for(
            lambda: len(world.status("queued").get("engines") or []) == 2 and world.status("queued"),
            what="planned",
        )
        assert sorted(e["phase"] for e in status["engines"]) == ["Building", "Queued"]
        assert len(world.jobs("queued")) == 1
        assert operator.controller.metrics.value("modelengine_build_queue_length") == 1
        world.node.gate.set()
        wait_for(_phase(world, "queued", "Ready"), timeout=120, what="Ready")
        assert len(world.jobs("queued")) == 2
    finally:
        world.node.gate.set()
        operator.stop()


def test_delete_retention_removes_engines_and_release(world: World) -> None:
    operator = world.operator()
    try:
        world.apply(
            world.modelengine(
                "ephemeral", targets=[{"computeCapability": "8.9"}], opt=6, retentionPolicy="Delete"
            )
        )
        status = wait_for(_phase(world, "ephemeral", "Ready"), timeout=120, what="Ready")
        obj = world.cluster.get("modelengines", NAMESPACE, "ephemeral")
        assert obj is not None and "modelengine.io/finalizer" in obj["metadata"]["finalizers"]
        key = status["engines"][0]["buildKey"]
        s3 = _s3(world)
        assert s3.list_objects_v2(Bucket=world.bucket, Prefix=f"store/engines/{key}/")["KeyCount"] >= 2
        world.custom.delete_namespaced_custom_object(
            "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", "ephemeral"
        )
        wait_for(lambda: world.cluster.get("modelengines", NAMESPACE, "ephemeral") is None, what="deleted")
        assert s3.list_objects_v2(Bucket=world.bucket, Prefix=f"store/engines/{key}/")["KeyCount"] == 0
        assert _release(world, "ephemeral") is None
        assert _release(world, "resnet-auto") is not None  # others' records untouched
    finally:
        operator.stop()


def test_a_second_replica_stays_passive_and_metrics_and_liveness_are_served(world: World) -> None:
    world.cluster.inject(
        lambda k: k.objects.__setitem__(
            (k.resource("kopf.dev/v1/clusterkopfpeerings"), None, "modelengine"),
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "modelengine"}},
        )
    )
    liveness = free_port()
    active = world.operator(
        peering="modelengine", priority=100, liveness_endpoint=f"http://127.0.0.1:{liveness}/healthz"
    )
    passive = world.operator(peering="modelengine", priority=50)
    try:
        # kopf pauses the lower priority only once it has read the peering object, so right
        # after start it may still reconcile what exists; the Lease (default in-cluster) has
        # no such window. Wait until the passive one has published itself, then check that
        # it takes no action on anything new.
        wait_for(
            lambda: (
                len((world.cluster.get("clusterkopfpeerings", None, "modelengine") or {}).get("status") or {})
                >= 2
            ),
            what="both peers in the peering object",
        )
        wait_for(lambda: passive.controller.idle.is_set(), what="the passive replica idle")
        mark = len(world.cluster.requests())
        world.apply(world.modelengine("ha", opt=4))
        wait_for(_phase(world, "ha", "Ready"), timeout=30, what="Ready")
        assert active.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) >= 1
        agent = passive.controller.config.identity
        writes = [
            (r.method, r.url.path)
            for r in world.cluster.requests()[mark:]
            if r.headers.get("User-Agent") == agent and r.method != "GET"
        ]
        assert writes == []
        # kopf peering pauses the lower priority's watches only some time after both peers
        # are listed, so under load the passive one may still reconcile from its caches; the
        # property that matters (and that the Lease election guarantees outright, see the
        # Lease test) is that it writes nothing.
        port = free_port()
        active.controller.metrics.serve(port, addr="127.0.0.1")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "modelengine_reconciles_total" in text and "modelengine_jobs_in_flight" in text
        health = urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=5)
        assert health.status == 200
    finally:
        passive.stop()
        active.stop()


def test_lease_leader_election_keeps_the_second_replica_passive_until_the_leader_stops(world: World) -> None:
    first = world.operator(lease_identity="replica-a")
    wait_for(
        lambda: first.controller.elector is not None and first.controller.elector.leading.is_set(),
        what="leader",
    )
    second = world.operator(lease_identity="replica-b")
    try:
        world.apply(world.modelengine("lease-one", opt=4))
        wait_for(_phase(world, "lease-one", "Ready"), timeout=30, what="Ready through the leader")
        assert second.controller.elector is not None and not second.controller.elector.leading.is_set()
        assert second.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) == 0
        lease = world.cluster.get("leases", NAMESPACE, "modelengine-operator")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
        first.stop()  # a stopping leader releases the Lease: failover without waiting for expiry
        wait_for(
            lambda: second.controller.elector is not None and second.controller.elector.leading.is_set(),
            timeout=10,
            what="failover",
        )
        world.apply(world.modelengine("lease-two", opt=4))
        wait_for(_phase(world, "lease-two", "Ready"), timeout=30, what="Ready through the new leader")
        assert second.controller.metrics.value("modelengine_reconciles_total", {"result": "ok"}) >= 1
    finally:
        first.stop()
        second.stop()


def test_namespace_scoped_operator_serves_only_its_namespaces(world: World) -> None:
    operator = world.operator(namespaces=["team-a"])
    try:
        for namespace in ("team-a", NAMESPACE):
            doc = world.modelengine("scoped", targets=[{"computeCapability": "8.9"}])
            doc["metadata"]["namespace"] = namespace
            doc["spec"]["storage"]["secretRef"] = {"name": "no-such-secret"}
            world.custom.create_namespaced_custom_object(
                "modelengine.io", "v1alpha1", namespace, "modelengines", doc
            )
        status = wait_for(
            lambda: (world.cluster.get("modelengines", "team-a", "scoped") or {}).get("status"),
            what="status in team-a",
        )
        # A missing storage Secret is reported, not retried silently.
        assert status["phase"] == "Failed"
        assert "storage Secret team-a/no-such-secret does not exist" in status["message"]
        wait_for(lambda: operator.controller.idle.is_set(), what="idle")
        assert (world.cluster.get("modelengines", NAMESPACE, "scoped") or {}).get("status") is None
    finally:
        operator.stop()


def test_a_253_character_name_gets_valid_labels_and_names_and_is_ready(world: World) -> None:
    # The fake API refuses label values over 63 characters or ending in `-`, as a real one does.
    name = ("m" * 60 + "-") * 4 + "x" * 9
    assert len(name) == 253
    operator = world.operator()
    try:
        world.apply(
            world.modelengine(
                name,
                targets=[{"cpu": True}],
                opt=6,
                serving={"minReplicas": 1, "maxReplicas": 2, "cpu": True},
            )
        )
        status = wait_for(_phase(world, name, "Ready"), timeout=120, what="Ready")
        assert status["targetsReady"] == "1/1"
        (job,) = world.jobs(name)
        labels = job["metadata"]["labels"]
        assert all(len(v) <= 63 and v[-1].isalnum() for v in labels.values()), labels
        assert labels["modelengine.io/name"] != name[:63]  # hash-suffixed, not cut at a `-`
        deployment = wait_for(
            lambda: (
                world.cluster.objects("deployments", NAMESPACE)
                and world.cluster.objects("deployments", NAMESPACE)
            ),
            what="serving Deployment",
            show=lambda: world.status(name),
        )[0]
        assert len(deployment["metadata"]["name"]) <= 63 and deployment["metadata"]["name"].endswith(
            "-runtime"
        )
    finally:
        operator.stop()


def _creates(world: World, path: str) -> int:
    return sum(
        1
        for r in world.cluster.requests()
        if r.url.path == path and "POST" in str(getattr(r.method, "value", r.method)).upper()
    )


def test_an_object_the_server_refuses_is_reported_and_retried_with_backoff(world: World) -> None:
    jobs_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    message = 'Job.batch "x" is invalid: metadata.labels: Invalid value: "-": must end with alphanumerics'
    # Refused as a real server refuses: nothing stored, nothing streamed to the watch.
    world.cluster.inject(lambda k: k.refuse_next("POST", jobs_path, 422, message=message))
    creates_before = _creates(world, jobs_path)
    operator = world.operator(options={"retry_seconds": 0.5})
    try:
        world.apply(world.modelengine("refused", targets=[{"cpu": True}], opt=7))  # a key no test built
        events = wait_for(
            lambda: [e for e in world.events("refused") if e["reason"] == "CreateRefused"], what="an Event"
        )
        assert "refused Job me-" in events[0]["message"] and "HTTP 422" in events[0]["message"]
        assert "must end with alphanumerics" in events[0]["message"]  # the server's own reason
        # The refusal reached the status too (read from the patches the operator sent: the
        # retry after 0.5 s may already have replaced it).
        patches = [
            r.data
            for r in world.cluster.requests()
            if r.url.path.endswith("/modelengines/refused/status") and isinstance(r.data, dict)
        ]
        failed = [p["status"] for p in patches if (p.get("status") or {}).get("phase") == "Failed"]
        assert failed and "the API server refused Job me-" in failed[0]["message"]
        # Retried with backoff, not given up: the next create goes through and the build finishes.
        wait_for(_phase(world, "refused", "Ready"), timeout=120, what="Ready after the retry")
        assert operator.controller.metrics.value("modelengine_reconciles_total", {"result": "retry"}) >= 1
        assert _creates(world, jobs_path) - creates_before >= 2  # refused once, then created
    finally:
        operator.stop()


def test_only_the_operators_own_events_are_posted_and_redacted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = "aws_secret_access_key=PlantedSecret0001 AKIAPLANTEDKEYID0001"
    operator = world.operator()
    try:

        def failing(event_type: str | None, body: dict[str, Any]) -> None:
            operator.controller.post_event(body, "Warning", "Planted", f"cannot reach the store: {planted}")
            # What a kopf component logs on an object's logger is posted as an Event when
            # kopf's log posting is on (kopf's settings are only reachable through its
            # context variable from here).
            settings = kopf_posting.settings_var.get()
            kopf.ObjectLogger(body=kopf.Body(cast(kopf.RawBody, body)), settings=settings).error(planted)
            raise RuntimeError(f"handler failed: {planted}")

        monkeypatch.setattr(operator.controller, "observe_modelengine", failing)
        world.apply(world.modelengine("noisy", targets=[{"cpu": True}], opt=11))
        ours = wait_for(
            lambda: [e for e in world.events("noisy") if e["reason"] == "Planted"], what="our Event"
        )
        time.sleep(1.5)  # kopf's failure line would be posted right after ours, by the same poster
        events = world.events("noisy")
        assert "PlantedSecret0001" not in ours[0]["message"] and "AKIAPLANTED" not in ours[0]["message"]
        assert "cannot reach the store" in ours[0]["message"]
        assert [e["reason"] for e in events] == ["Planted"]  # no "Logging" Event of kopf's own
        assert not any(
            "PlantedSecret0001" in json.dumps(e) or "AKIAPLANTEDKEYID0001" in json.dumps(e) for e in events
        )
    finally:
        operator.stop()
        world.delete("noisy")
