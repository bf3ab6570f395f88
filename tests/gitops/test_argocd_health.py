"""The Argo CD health check (helm/modelengine/files/argocd-health.lua) run by a real Lua.

Argo CD runs health checks in gopher-lua, a Lua 5.1; `lupa.lua51` embeds the reference
Lua 5.1, so the script runs here as Argo CD runs it: `obj` is the ModelEngine as a table,
the script's return value is the health. Every status document comes from the operator's
own `desired_status` / `with_serving`, the functions the controller writes status with, so
a change to the status shape breaks these tests rather than Argo CD's view of ModelEngines.
Expected messages are read from the document's own conditions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

from modelengine.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    EnginePhase,
    EngineStatus,
    ModelEngine,
    ModelEngineStatus,
    RolloutPhase,
    ServingGroupStatus,
)
from modelengine.operator.status import desired_status, with_serving

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "helm" / "modelengine" / "files" / "argocd-health.lua"
ARGOCD_KEY = "resource.customizations.health.modelengine.io_ModelEngine"

Doc = dict[str, Any]


def health(obj: Doc) -> tuple[str, str]:
    lua = lua51.LuaRuntime()
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT.read_text())
    assert set(hs.keys()) == {"status", "message"}, dict(hs)
    return str(hs["status"]), str(hs["message"])


def engine(target: str, phase: str, reason: str | None = None) -> EngineStatus:
    return EngineStatus(
        target=target,
        build_key=f"{target}-key",
        phase=EnginePhase(phase),
        backend="tensorrt-rtx",
        reason=reason,
    )


def status(engines: list[EngineStatus], generation: int = 2, **kwargs: Any) -> ModelEngineStatus:
    return desired_status(
        engines=engines,
        skipped=[],
        orphaned=[],
        generation=generation,
        model_digest="sha256:abc",
        current=None,
        **kwargs,
    )


def modelengine(st: ModelEngineStatus | None, generation: int = 2, **metadata: Any) -> Doc:
    doc: Doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": "resnet", "namespace": "ml", "generation": generation, **metadata},
        "spec": {
            "model": {"source": "s3://models/resnet.pt", "format": "torchscript"},
            "export": {"inputs": [{"name": "x", "shape": [1, 3, 224, 224]}]},
            "targets": [{"auto": True}],
            "storage": {"uri": "s3://models/store"},
        },
    }
    if st is not None:
        doc["status"] = st.to_wire()
    ModelEngine.model_validate(doc)  # a ModelEngine the API server would accept
    return doc


def condition(doc: Doc, ctype: str) -> Doc:
    (found,) = [c for c in doc["status"]["conditions"] if c["type"] == ctype]
    return dict(found)


def group(name: str, phase: RolloutPhase, reason: str | None = None, **kwargs: Any) -> ServingGroupStatus:
    return ServingGroupStatus(group=name.lower(), product=name, phase=phase, reason=reason, **kwargs)


READY = [engine("sm89-l4", "Ready"), engine("sm90-h100", "Ready")]


def test_building_is_progressing_with_the_targets_being_built() -> None:
    doc = modelengine(status([engine("sm89-l4", "Ready"), engine("sm90-h100", "Building")]))
    assert doc["status"]["phase"] == "Building"
    assert health(doc) == ("Progressing", condition(doc, "Reconciling")["message"])
    assert "sm90-h100 (Building)" in health(doc)[1]


def test_queued_builds_are_progressing_too() -> None:
    doc = modelengine(status([engine("sm89-l4", "Queued")]))
    assert health(doc) == ("Progressing", "sm89-l4 (Queued)")


def test_ready_is_healthy_with_the_engine_count() -> None:
    doc = modelengine(status(READY))
    assert doc["status"]["phase"] == "Ready"
    assert health(doc) == ("Healthy", condition(doc, "Ready")["message"])
    assert health(doc)[1] == "2/2 engines ready"


def test_partially_ready_is_degraded_naming_the_failed_target() -> None:
    doc = modelengine(
        status(
            [
                engine("sm89-l4", "Ready"),
                engine("sm90-h100", "Failed", "export refused: data-dependent branch"),
            ]
        )
    )
    assert doc["status"]["phase"] == "PartiallyReady"
    assert health(doc) == ("Degraded", condition(doc, "Stalled")["message"])
    assert health(doc)[1] == "sm90-h100: export refused: data-dependent branch"


def test_partially_ready_and_serving_its_ready_kinds_is_still_degraded() -> None:
    """Serving the Ready engines does not make a failed target healthy: it needs a spec edit
    (Stalled), so Argo CD says Degraded with the build's reason; `status.serving` shows the
    kinds that serve and the one that cannot."""
    failed = engine("sm75-t4", "Failed", "sm75-t4: FP32 GEMM is not supported on Turing (SM75)")
    groups = [
        group("NVIDIA-L4", RolloutPhase.ROLLED_OUT, replicas=2, ready_replicas=2),
        group(
            "Tesla-T4",
            RolloutPhase.NO_ENGINE,
            "no engine for Tesla-T4 (7.5): no pods there; the build of sm75-t4 failed: FP32 GEMM is not supported",
        ),
    ]
    doc = modelengine(with_serving(status([engine("sm89-l4", "Ready"), failed]), groups, None))
    assert doc["status"]["phase"] == "PartiallyReady"
    assert [condition(doc, c)["status"] for c in ("Ready", "Reconciling", "Stalled")] == [
        "False",
        "False",
        "True",
    ]
    assert condition(doc, "RolloutStalled")["status"] == "False"
    assert health(doc) == ("Degraded", "sm75-t4: FP32 GEMM is not supported on Turing (SM75)")


def test_failed_build_is_degraded() -> None:
    doc = modelengine(status([engine("sm89-l4", "Failed", "sm89-l4: unsupported op aten::foo")]))
    assert doc["status"]["phase"] == "Failed"
    assert health(doc) == ("Degraded", "sm89-l4: unsupported op aten::foo")


def test_invalid_spec_is_degraded_with_every_problem() -> None:
    doc = modelengine(status([], problems=["spec.targets[0]: unknown GPU", "spec.model.uri: empty"]))
    assert health(doc) == ("Degraded", "spec.targets[0]: unknown GPU\nspec.model.uri: empty")


def test_a_transient_planning_failure_is_progressing_while_retried() -> None:
    doc = modelengine(status([], error="store unreachable: connection refused"))
    assert doc["status"]["phase"] == "Failed"
    assert condition(doc, "Stalled")["status"] == "False"
    assert health(doc) == ("Progressing", "store unreachable: connection refused")


def test_resolving_the_model_is_progressing() -> None:
    doc = modelengine(status([], waiting="resolving s3://models/resnet.pt2"))
    assert health(doc) == ("Progressing", "resolving s3://models/resnet.pt2")


def test_no_gpu_nodes_yet_is_progressing_with_what_it_waits_for() -> None:
    doc = modelengine(status([]))
    assert doc["status"]["phase"] == "Pending"
    message = health(doc)
    assert message == ("Progressing", doc["status"]["message"])
    assert "waiting for GPU nodes" in message[1]


def test_stalled_rollout_is_degraded_even_though_engines_are_ready() -> None:
    groups = [
        group("NVIDIA-L4", RolloutPhase.ROLLED_OUT, replicas=2, ready_replicas=2),
        group("NVIDIA-H100", RolloutPhase.STALLED, "new pods never turned ready (ProgressDeadlineExceeded)"),
    ]
    doc = modelengine(with_serving(status(READY), groups, None))
    assert condition(doc, "Ready")["status"] == "True"
    assert health(doc) == ("Degraded", condition(doc, "RolloutStalled")["message"])
    assert health(doc)[1] == "NVIDIA-H100: new pods never turned ready (ProgressDeadlineExceeded)"


def test_version_mismatch_holds_the_rollout_and_is_degraded() -> None:
    groups = [
        group(
            "NVIDIA-L4", RolloutPhase.VERSION_MISMATCH, "engine built by TensorRT-RTX 1.7.1, image has 1.6.0"
        )
    ]
    doc = modelengine(with_serving(status(READY), groups, None))
    assert health(doc) == ("Degraded", "NVIDIA-L4: engine built by TensorRT-RTX 1.7.1, image has 1.6.0")


def test_a_rollout_under_way_is_progressing_with_ready_replicas() -> None:
    groups = [
        group("NVIDIA-L4", RolloutPhase.PROGRESSING, replicas=3, ready_replicas=1),
        group("NVIDIA-H100", RolloutPhase.ROLLED_OUT, replicas=1, ready_replicas=1),
    ]
    doc = modelengine(with_serving(status(READY), groups, None))
    assert health(doc) == ("Progressing", "rolling out: NVIDIA-L4 1/3")


def test_rolled_out_is_healthy_and_names_gpu_kinds_without_an_engine() -> None:
    groups = [
        group("NVIDIA-L4", RolloutPhase.ROLLED_OUT, replicas=2, ready_replicas=2),
        group("NVIDIA-A10G", RolloutPhase.NO_ENGINE, "no engine for this GPU kind"),
    ]
    doc = modelengine(with_serving(status(READY), groups, None))
    assert health(doc) == ("Healthy", "2/2 engines ready; no engine (no pods) for NVIDIA-A10G")
    rolled_out = modelengine(with_serving(status(READY), groups[:1], None))
    assert health(rolled_out) == ("Healthy", "2/2 engines ready")


def test_a_new_generation_not_yet_observed_is_progressing_whatever_the_old_status_says() -> None:
    for old in (status(READY, generation=2), status([engine("sm89-l4", "Failed", "boom")], generation=2)):
        doc = modelengine(old, generation=3)
        assert health(doc) == ("Progressing", "waiting for the operator to observe generation 3")


def test_being_deleted_is_progressing() -> None:
    doc = modelengine(status(READY), deletionTimestamp="2026-12-02T10:00:00Z")
    assert health(doc) == ("Progressing", "being deleted: waiting for the operator to release its finalizer")


def test_no_status_yet_is_progressing() -> None:
    assert health(modelengine(None, generation=1)) == (
        "Progressing",
        "waiting for the operator to report a status",
    )


def test_docs_show_the_shipped_script() -> None:
    """The argocd-cm snippet in docs/gitops.md is the chart's file, byte for byte."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "gitops.md").read_text(), flags=re.S)
    snippets = [
        doc["data"][ARGOCD_KEY] for doc in map(yaml.safe_load, blocks) if ARGOCD_KEY in doc.get("data", {})
    ]
    assert snippets == [SCRIPT.read_text()]
