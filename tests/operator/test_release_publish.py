"""When the release record is published, and what it holds: the Ready engines of a final generation.

A generation is published once every target is final: `Ready`, or `PartiallyReady` (some
built, the others failed), never while one still builds or when none was built. The record
holds only the Ready engines, and the runtime's own selection finds its GPU's engine in it
or says plainly that its kind has none.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelengine.api.models import BackendName, EngineStatus, ModelEngine, ModelEngineStatus, Phase
from modelengine.api.targets import ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.operator.plan import PlannedTarget
from modelengine.operator.release_record import held_kinds, publish_release, released_targets, should_publish
from modelengine.operator.status import desired_status
from modelengine.runtime.accelerator import Accelerator
from modelengine.runtime.selection import select_engine
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.layout import release_key
from modelengine.store.manifest import EngineManifest, EngineTarget, TensorInfo
from modelengine.store.open import open_store
from modelengine.store.publish import publish_engine, read_manifest, read_release

L4_KEY, T4_KEY, A100_KEY = "8" * 32, "7" * 32, "a" * 32
L4 = PlannedTarget(ResolvedTarget(BackendName.TENSORRT_RTX, "8.9"), L4_KEY)
T4 = PlannedTarget(ResolvedTarget(BackendName.TENSORRT_RTX, "7.5"), T4_KEY)
A100 = PlannedTarget(ResolvedTarget(BackendName.TENSORRT_RTX, "8.0"), A100_KEY)
RTX = "1.7.1.116"


def engine(planned: PlannedTarget, phase: str, reason: str | None = None) -> EngineStatus:
    doc = {
        "target": planned.target.name,
        "buildKey": planned.build_key,
        "phase": phase,
        "backend": planned.target.backend.value,
        "backendVersion": RTX,
        "computeCapability": planned.target.compute_capability,
    }
    if reason:
        doc["reason"] = reason
    return EngineStatus.model_validate(doc)


def status(
    engines: list[EngineStatus], generation: int, current: ModelEngineStatus | None = None
) -> ModelEngineStatus:
    return desired_status(
        engines=engines, skipped=[], orphaned=[], generation=generation, model_digest="d", current=current
    )


FAILED_T4 = "tensorrt-rtx-cc7.5: FP32 GEMM is not supported on Turing (SM75)"


def test_a_generation_is_published_once_every_target_is_final_with_one_ready() -> None:
    empty = ModelEngineStatus()
    building = status([engine(L4, "Ready"), engine(T4, "Building")], 1)
    partial = status([engine(L4, "Ready"), engine(T4, "Failed", FAILED_T4)], 1)
    failed = status([engine(L4, "Failed", "boom"), engine(T4, "Failed", FAILED_T4)], 1)
    ready = status([engine(L4, "Ready"), engine(T4, "Ready")], 1)
    assert (building.phase, partial.phase, failed.phase, ready.phase) == (
        Phase.BUILDING,
        Phase.PARTIALLY_READY,
        Phase.FAILED,
        Phase.READY,
    )
    # Half built: the previous release keeps serving. Nothing built: nothing to release.
    assert should_publish(empty, building, 1) is False
    assert should_publish(building, failed, 1) is False
    # Every target final, at least one Ready: published, PartiallyReady as Ready.
    assert should_publish(building, partial, 1) is True
    assert should_publish(building, ready, 1) is True
    assert should_publish(empty, partial, 1) is True
    # Already written with the status (a restart, a reconcile that changes nothing): not again.
    assert should_publish(partial, status(partial.engines, 1, current=partial), 1) is False
    assert should_publish(ready, status(ready.engines, 1, current=ready), 1) is False
    # The failed target removed from the spec: a new generation, Ready, published again.
    fixed = status([engine(L4, "Ready")], 2, current=partial)
    assert fixed.phase is Phase.READY and should_publish(partial, fixed, 2) is True
    # The failed build fixed in place (same generation, the engine now Ready): published.
    assert should_publish(partial, status(ready.engines, 1, current=partial), 1) is True
    # An update final with one kind failed calls for a release (whether it would drop a served
    # kind, and is held, is `held_kinds`' call: below).
    assert should_publish(ready, status([engine(L4, "Ready"), engine(T4, "Failed", FAILED_T4)], 3), 3) is True
    # A new generation that fails on the kind that served: the old record stays.
    assert should_publish(ready, status([engine(L4, "Failed", "boom")], 3, current=ready), 3) is False


def test_released_targets_are_the_ready_ones_in_plan_order() -> None:
    engines = [engine(A100, "Ready"), engine(T4, "Failed", FAILED_T4), engine(L4, "Ready")]
    assert released_targets([A100, T4, L4], engines) == [A100, L4]
    assert released_targets([T4], [engine(T4, "Failed", FAILED_T4)]) == []
    assert released_targets([L4, T4], [engine(L4, "Ready"), engine(T4, "Building")]) == [L4]
    with pytest.raises(ValueError, match="2 planned targets but 1 engine states"):
        released_targets([L4, T4], [engine(L4, "Ready")])


def _manifest(planned: PlannedTarget) -> EngineManifest:
    io = [TensorInfo(name="x", dtype="float32", shape=[-1, 8], min=[1, 8], opt=[4, 8], max=[16, 8])]
    return EngineManifest(
        build_key=planned.build_key,
        model_digest="c" * 64,
        onnx_digest="b" * 64,
        backend=planned.target.backend.value,
        backend_version=RTX,
        target=EngineTarget(compute_capability=planned.target.compute_capability),
        precision="fp32",
        inputs=io,
        outputs=[TensorInfo(name="y", dtype="float32", shape=[-1, 4])],
        engine_file="engine.trtrtx",
        sha256="",
        size=0,
        build_seconds=1.0,
        created="2026-12-01T00:00:00Z",
    )


async def _read(store: ObjectStore, key: str) -> EngineManifest | None:
    return read_manifest(store, key)


def _built(tmp_path: Path, other_cc: str) -> tuple[ObjectStore, ModelEngine]:
    """A store holding the L4 and A100 engines, and a ModelEngine targeting 8.9 + `other_cc`."""
    store = open_store((tmp_path / "store").as_uri())
    for planned in (L4, A100):
        path = tmp_path / f"{planned.build_key}.plan"
        path.write_bytes(planned.build_key.encode())
        publish_engine(store, engine_path=path, base_name="engine.trtrtx", manifest=_manifest(planned))
    me = parse_modelengine(
        {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": "net", "namespace": "ml"},
            "spec": {
                "model": {"source": "s3://m/net.onnx", "format": "onnx"},
                "export": {"inputs": [{"name": "x", "shape": [1, 8]}]},
                "targets": [{"computeCapability": "8.9"}, {"computeCapability": other_cc}],
                "storage": {"uri": store.uri},
            },
        }
    )
    return store, me


def test_a_partially_ready_record_holds_the_ready_engines_and_the_runtime_finds_them(tmp_path: Path) -> None:
    store, me = _built(tmp_path, "7.5")  # the T4 build failed: no manifest
    engines = [engine(A100, "Ready"), engine(T4, "Failed", FAILED_T4), engine(L4, "Ready")]
    ready = released_targets([A100, T4, L4], engines)
    asyncio.run(publish_release(me, 4, ready, store, manifest=_read))
    record = read_release(store, "ml", "net")
    assert record is not None and record.generation == 4
    assert [(e.target, e.build_key, e.compute_capability) for e in record.engines] == [
        ("tensorrt-rtx-cc8.0", A100_KEY, "8.0"),
        ("tensorrt-rtx-cc8.9", L4_KEY, "8.9"),
    ]

    # Unchanged: the store is not written again (a restarted operator rewrites nothing).
    written = store.get_bytes(release_key("ml", "net"))
    asyncio.run(publish_release(me, 4, ready, store, manifest=_read))
    assert store.get_bytes(release_key("ml", "net")) == written

    # The runtime on an L4 loads the L4 engine; on a T4 (its build failed) it finds none and
    # says so, naming the accelerator and the engines that exist.
    installed = {"tensorrt-rtx": RTX}
    l4 = select_engine(Accelerator(product="NVIDIA L4", compute_capability="8.9"), record, installed)
    assert l4.engine is not None and l4.engine.build_key == L4_KEY
    t4 = select_engine(Accelerator(product="Tesla T4", compute_capability="7.5"), record, installed)
    assert t4.engine is None
    assert t4.reason == (
        "no engine of ml/net fits Tesla T4 (compute capability 7.5); engines: "
        f"tensorrt-rtx-cc8.0 (tensorrt-rtx {RTX}), tensorrt-rtx-cc8.9 (tensorrt-rtx {RTX})"
    )

    # A Ready engine whose manifest vanished is an error to retry, not a record without it.
    with pytest.raises(StoreError, match=f"manifest of {T4_KEY} disappeared"):
        asyncio.run(publish_release(me, 5, [L4, T4], store, manifest=_read))
    assert store.get_bytes(release_key("ml", "net")) == written


def test_a_partial_update_that_would_drop_a_served_kind_is_held(tmp_path: Path) -> None:
    store, me = _built(tmp_path, "8.0")
    # Nothing released yet: a first partial generation has nothing to keep.
    assert asyncio.run(held_kinds(me, 1, [L4], store)) == []
    asyncio.run(publish_release(me, 1, [L4, A100], store, manifest=_read))  # generation 1 serves both
    # Generation 2 built only for the L4: the A100 would lose its engine, so it is held.
    assert asyncio.run(held_kinds(me, 2, [L4], store)) == ["tensorrt-rtx-cc8.0"]
    # Every served kind built again (a new kind failing alone drops nothing): released.
    assert asyncio.run(held_kinds(me, 2, [L4, A100], store)) == []
    # The stored record is this generation's own: nothing earlier to keep.
    assert asyncio.run(held_kinds(me, 1, [L4], store)) == []
