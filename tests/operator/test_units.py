"""Unit tests of the operator's pure parts: nodes, plans, Job manifests, status, limits, digests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelengine.api.models import BackendName, EngineStatus
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.cli import build_parser
from modelengine.operator import build_jobs as jobs
from modelengine.operator import nodes
from modelengine.operator.builds import termination_reason as _termination_reason
from modelengine.operator.command import config_from_args
from modelengine.operator.config import ConfigError, OperatorConfig, parse_backend_versions
from modelengine.operator.limiter import BuildLimiter
from modelengine.operator.plan import make_plan
from modelengine.operator.status import desired_status, differs, parse_status

L4 = GpuKind("NVIDIA-L4", "8.9")
A100 = GpuKind("NVIDIA-A100", "8.0")
H100 = GpuKind("NVIDIA-H100", "9.0")
VERSIONS = {BackendName.TENSORRT_RTX: "1.7.1", BackendName.TENSORRT: "10.13", BackendName.ONNXRUNTIME: "1.22"}


def _me(targets: list[dict[str, Any]], backend: str = "tensorrt-rtx", **build: Any) -> Any:
    return parse_modelengine(
        {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "model": {"source": "/m", "format": "onnx"},
                "export": {"inputs": [{"name": "x", "shape": [1, 3]}]},
                "build": {"backend": backend, **build},
                "targets": targets,
                "storage": {"uri": "s3://b/p", "secretRef": {"name": "creds"}},
            },
        }
    )


def _labels(product: str, cc: str, present: str = "true") -> dict[str, str]:
    major, minor = cc.split(".")
    return {nodes.PRESENT: present, nodes.PRODUCT: product, nodes.MAJOR: major, nodes.MINOR: minor}


def test_gpu_kinds_from_gfd_labels() -> None:
    assert nodes.gpu_kind(_labels("NVIDIA-L4", "8.9")) == GpuKind("NVIDIA-L4", "8.9")
    assert nodes.gpu_kind({"kubernetes.io/os": "linux"}) is None
    assert nodes.gpu_kind(_labels("NVIDIA-L4", "8.9", present="false")) is None
    inventory = nodes.NodeInventory()
    assert inventory.update("a", _labels("NVIDIA-L4", "8.9")) is True
    assert inventory.update("b", _labels("NVIDIA-L4", "8.9")) is False  # same kind: no re-plan
    assert inventory.remove("a") is False
    assert inventory.remove("b") is True


def test_plan_skips_what_rtx_cannot_target_and_keys_are_stable() -> None:
    me = _me([{"auto": True}])
    plan = make_plan(
        me.spec,
        gpu_kinds=[L4, A100, H100],
        products={},
        model_digest="d",
        versions=VERSIONS,
        previous_engines=[],
    )
    assert [p.target.name for p in plan.targets] == ["tensorrt-rtx-cc8.0", "tensorrt-rtx-cc8.9"]
    assert plan.skipped == ["NVIDIA-H100 (compute capability 9.0): tensorrt-rtx cannot target it"]
    again = make_plan(
        me.spec, gpu_kinds=[A100, L4], products={}, model_digest="d", versions=VERSIONS, previous_engines=[]
    )
    assert [p.build_key for p in again.targets] == [p.build_key for p in plan.targets]
    other = make_plan(
        me.spec, gpu_kinds=[A100, L4], products={}, model_digest="e", versions=VERSIONS, previous_engines=[]
    )
    assert not {p.build_key for p in other.targets} & {p.build_key for p in plan.targets}


def test_plan_reports_missing_versions_and_orphans() -> None:
    me = _me([{"auto": True}], backend="tensorrt")
    plan = make_plan(me.spec, gpu_kinds=[L4], products={}, model_digest="d", versions={}, previous_engines=[])
    assert plan.targets == [] and "set --backend-version tensorrt=VERSION" in plan.skipped[0]
    full = make_plan(
        me.spec, gpu_kinds=[L4, A100], products={}, model_digest="d", versions=VERSIONS, previous_engines=[]
    )
    a100 = next(p for p in full.targets if p.target.compute_capability == "8.0")
    previous = [
        EngineStatus.model_validate(
            {
                "target": a100.target.name,
                "buildKey": a100.build_key,
                "phase": "Ready",
                "backend": "tensorrt",
                "backendVersion": "10.13",
                "computeCapability": "8.0",
            }
        )
    ]
    after = make_plan(
        me.spec, gpu_kinds=[L4], products={}, model_digest="d", versions=VERSIONS, previous_engines=previous
    )
    assert [e.to_wire()["buildKey"] for e in after.orphaned] == [a100.build_key]
    # A spec change (other model) makes the old engine simply superseded, not orphaned.
    changed = make_plan(
        me.spec, gpu_kinds=[L4], products={}, model_digest="e", versions=VERSIONS, previous_engines=previous
    )
    assert changed.orphaned == []


def test_gpu_job_is_pinned_and_cpu_job_avoids_gpus() -> None:
    config = OperatorConfig(builder_image="reg/builder:1")
    me = _me([{"product": "NVIDIA-L4"}], backend="tensorrt")
    gpu = jobs.build_job(
        me=me,
        uid="u1",
        generation=3,
        target=ResolvedTarget(BackendName.TENSORRT, "8.9", "NVIDIA-L4"),
        build_key="k" * 32,
        config=config,
    )
    pod = gpu["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert gpu["metadata"]["name"] == "me-build-" + "k" * 20
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {t["key"]: t["values"] for t in terms[0]["matchExpressions"]} == {
        nodes.MAJOR: ["8"],
        nodes.MINOR: ["9"],
        nodes.PRODUCT: ["NVIDIA-L4"],
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    resource = json.loads(env["MODELENGINE_RESOURCE"])
    assert (
        resource["metadata"] == {"name": "m", "namespace": "ns", "generation": 3} and "status" not in resource
    )
    assert json.loads(env["MODELENGINE_TARGET"]) == {
        "backend": "tensorrt",
        "computeCapability": "8.9",
        "product": "NVIDIA-L4",
    }
    assert container["terminationMessagePath"] == env["MODELENGINE_TERMINATION_LOG"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert gpu["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert gpu["spec"]["backoffLimit"] == config.job_backoff_limit
    cpu = jobs.build_job(
        me=_me([{"computeCapability": "8.9"}]),
        uid=None,
        generation=1,
        target=ResolvedTarget(BackendName.TENSORRT_RTX, "8.9"),
        build_key="c" * 32,
        config=config,
    )
    cpu_pod = cpu["spec"]["template"]["spec"]
    assert (
        "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
        and "tolerations" not in cpu_pod  # the server drops an empty list
    )


def test_job_states() -> None:
    assert jobs.job_state({"status": {}}) == "Running"
    assert jobs.job_state({"status": {"succeeded": 1}}) == "Succeeded"
    failed = {"spec": {"backoffLimit": 1}, "status": {"failed": 2}}
    assert jobs.job_state(failed) == "Failed"
    cond = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert jobs.job_state(cond) == "Failed" and "DeadlineExceeded" in jobs.job_failure_reason(cond)


def test_termination_message_gives_the_builders_reason() -> None:
    summary = json.dumps({"phase": "Failed", "reason": "control flow frozen by tracing at model.py:57"})
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": summary}}}]}}
    assert _termination_reason(pod) == "control flow frozen by tracing at model.py:57"
    plain = {"status": {"containerStatuses": [{"state": {"terminated": {"message": "OOMKilled\nmore"}}}]}}
    assert _termination_reason(plain) == "OOMKilled"
    assert _termination_reason({"status": {}}) is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("[" * 4096, "[" * 497 + "..."),  # deeper than json's recursion limit: read as text
        (json.dumps({"reason": "first line\nsecond line"}), "first line"),
        (json.dumps({"reason": "x" * 5000}), None),  # over kubelet's 4 KiB: cut, then text
        (json.dumps({"reason": ["not", "text"]}), "['not', 'text']"),
    ],
)
def test_a_hostile_termination_message_is_one_bounded_line(message: str, reason: str | None) -> None:
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"message": message}}}]}}
    got = _termination_reason(pod)
    assert got is not None and "\n" not in got and len(got) <= 1000
    if reason is not None:
        assert got == reason


def _engine(target: str, phase: str, reason: str | None = None) -> EngineStatus:
    out = {"target": target, "buildKey": target, "phase": phase, "backend": "tensorrt-rtx"}
    if reason:
        out["reason"] = reason
    return EngineStatus.model_validate(out)


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Ready", "Ready"], "Ready"),
        (["Ready", "Building"], "Building"),
        (["Queued", "Failed"], "Building"),
        (["Ready", "Failed"], "PartiallyReady"),
        (["Failed"], "Failed"),
        ([], "Pending"),
    ],
)
def test_overall_phase(phases: list[str], expected: str) -> None:
    engines = [_engine(f"t{i}", p, "boom" if p == "Failed" else None) for i, p in enumerate(phases)]
    status = desired_status(
        engines=engines, skipped=[], orphaned=[], generation=2, model_digest="d", current=None
    ).to_wire()
    assert status["phase"] == expected
    assert status["targetsReady"] == f"{phases.count('Ready')}/{len(phases)}"
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_unchanged_status_is_not_a_change_and_keeps_transition_times() -> None:
    engines = [_engine("a", "Ready")]
    first = desired_status(
        engines=engines, skipped=[], orphaned=[], generation=1, model_digest="d", current=None
    ).to_wire()
    for c in first["conditions"]:
        c["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    again = desired_status(
        engines=engines, skipped=[], orphaned=[], generation=1, model_digest="d", current=parse_status(first)
    )
    assert not differs(first, again)
    failed = desired_status(
        engines=[_engine("a", "Failed", "a: boom")],
        skipped=[],
        orphaned=[],
        generation=1,
        model_digest="d",
        current=parse_status(first),
    ).to_wire()
    conds = {c["type"]: c for c in failed["conditions"]}
    assert conds["Failed"]["message"] == "a: boom"  # the builder's own prefix is not repeated
    assert conds["Ready"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_auto_with_no_gpu_nodes_says_what_it_waits_for() -> None:
    status = desired_status(
        engines=[], skipped=[], orphaned=[], generation=1, model_digest="d", current=None
    ).to_wire()
    assert status["phase"] == "Pending" and "waiting for GPU nodes" in status["message"]


def test_invalid_spec_status_lists_every_problem() -> None:
    status = desired_status(
        engines=[],
        skipped=[],
        orphaned=[],
        generation=1,
        model_digest=None,
        current=None,
        problems=["spec.a: bad", "spec.b: worse"],
    ).to_wire()
    assert status["phase"] == "Failed" and status["message"] == "spec.a: bad\nspec.b: worse"


def test_limiter_counts_overall_and_per_kind() -> None:
    limiter = BuildLimiter(max_builds=3, max_per_kind=2)
    limiter.set_running("j1", "cc8.9")
    limiter.set_running("j2", "cc8.9")
    assert not limiter.can_start("cc8.9") and limiter.can_start("cc8.0")
    limiter.set_running("j3", "cc8.0")
    assert not limiter.can_start("cc7.5")
    limiter.wait(("ns", "b"))
    limiter.wait(("ns", "a"))
    assert limiter.waiting() == [("ns", "b"), ("ns", "a")]
    assert limiter.set_finished("j1") and not limiter.set_finished("j1")
    assert limiter.can_start("cc8.9")


def test_backend_version_flags() -> None:
    assert parse_backend_versions(["tensorrt-rtx=1.7.1", "onnxruntime = 1.22"]) == {
        "tensorrt-rtx": "1.7.1",
        "onnxruntime": "1.22",
    }
    with pytest.raises(ConfigError, match="expected NAME=VERSION"):
        parse_backend_versions(["tensorrt-rtx"])
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'"):
        OperatorConfig(backend_versions={"tensorflow": "2"})
    assert (
        OperatorConfig(backend_versions={"tensorrt": "10.13"}).backend_version(BackendName.TENSORRT)
        == "10.13"
    )


def test_operator_flags_map_onto_the_config() -> None:
    args = build_parser().parse_args(
        [
            "operator",
            "-n",
            "a",
            "-n",
            "b",
            "--max-builds",
            "3",
            "--max-builds-per-kind",
            "1",
            "--backend-version",
            "tensorrt=10.13",
            "--builder-image",
            "r/b:2",
            "--job-deadline-seconds",
            "900",
        ]
    )
    config = config_from_args(args)
    assert args.namespace == ["a", "b"] and config.max_builds == 3 and config.max_builds_per_kind == 1
    assert config.builder_image == "r/b:2" and config.job_deadline_seconds == 900
    with pytest.raises(ConfigError):
        config_from_args(build_parser().parse_args(["operator", "--max-builds", "0"]))


def test_the_operator_imports_no_build_or_runtime_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modelengine.operator.command, modelengine.operator.controller, modelengine.operator.run;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt_rtx', 'onnxruntime')"
        " or m.startswith(('modelengine.export', 'modelengine.verify', 'modelengine.backends'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("phases", "kwargs", "ready", "reconciling", "stalled"),
    [
        (["Ready", "Ready"], {}, "True", "False", "False"),
        (["Ready", "Building"], {}, "False", "True", "False"),
        (["Queued"], {}, "False", "True", "False"),
        (["Ready", "Failed"], {}, "False", "False", "True"),
        (["Failed", "Building"], {}, "False", "True", "False"),  # still working: not stalled yet
        ([], {"waiting": "resolving the model source (Job me-resolve-x)"}, "False", "True", "False"),
        ([], {"problems": ["spec.a: bad"]}, "False", "False", "True"),
        ([], {"error": "frozen branch flips", "error_reason": "ResolveFailed"}, "False", "False", "True"),
        ([], {"error": "store unreachable"}, "False", "True", "False"),  # transient: retried
        ([], {}, "False", "True", "False"),  # waiting for GPU nodes
    ],
)
def test_kstatus_conditions(
    phases: list[str], kwargs: dict[str, Any], ready: str, reconciling: str, stalled: str
) -> None:
    engines = [_engine(f"t{i}", p, "boom" if p == "Failed" else None) for i, p in enumerate(phases)]
    status = desired_status(
        engines=engines, skipped=[], orphaned=[], generation=3, model_digest="d", current=None, **kwargs
    ).to_wire()
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds["Ready"]["status"], conds["Reconciling"]["status"], conds["Stalled"]["status"]) == (
        ready,
        reconciling,
        stalled,
    )
    assert all(c["observedGeneration"] == 3 for c in conds.values())
    assert status["observedGeneration"] == 3
    for ctype in ("Reconciling", "Stalled"):
        if conds[ctype]["status"] == "True":
            assert conds[ctype]["reason"] and conds[ctype]["message"] is not None
