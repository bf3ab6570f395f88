"""The release record a ModelEngine publishes for its runtime pods.

`releases/<namespace>/<name>.json` lists the engine of every Ready target (uri, sha256,
target); the runtime sidecar reads it and picks the engine for the GPU it finds. A
generation is published once every target has reached a final phase: `Ready` (every
engine) or `PartiallyReady` (some built, the others failed; the record holds the built
ones, so their GPU kinds serve while the failed kinds have nothing to load). While a
generation still builds (or when every target failed) nothing is published, and the
previous record keeps serving. It is written when the status reaches such a phase or
changes while in one, and only when it differs from what the store holds, so a restarted
operator rewrites nothing.

A partial generation never takes serving away (`held_kinds`): when the record in the store
(an earlier generation) serves a GPU kind the new generation failed to build, the earlier
record stays and keeps serving everywhere; an update that cannot build for a kind in use is
held back whole, as a failed rollout would be, rather than mixing versions behind one
Service or dropping the kind. A first generation has nothing to keep and is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modelengine.api.models import EnginePhase, EngineStatus, ModelEngine, ModelEngineStatus, Phase
from modelengine.operator.plan import PlannedTarget
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.manifest import EngineManifest
from modelengine.store.publish import read_release, write_release
from modelengine.store.release import make_release

ManifestReader = Callable[[ObjectStore, str], Awaitable[EngineManifest | None]]

RELEASED_PHASES = (Phase.READY, Phase.PARTIALLY_READY)  # every target final, at least one built


def should_publish(current: ModelEngineStatus, desired: ModelEngineStatus, generation: int | None) -> bool:
    """Whether `desired` calls for (re)publishing the release record.

    Only a generation whose targets are all final (Ready or Failed) with at least one
    Ready is published; and only when it differs from the status last written, which was
    published with it (a restart, or a reconcile that changes nothing, writes nothing).
    """
    if desired.phase not in RELEASED_PHASES:
        return False
    return (current.phase, current.observed_generation, current.engines) != (
        desired.phase,
        generation,
        desired.engines,
    )


def released_targets(planned: list[PlannedTarget], engines: list[EngineStatus]) -> list[PlannedTarget]:
    """The planned targets whose engine is Ready (`engines` is in `planned`'s order)."""
    if len(planned) != len(engines):
        raise ValueError(f"{len(planned)} planned targets but {len(engines)} engine states")
    return [p for p, e in zip(planned, engines, strict=True) if e.phase is EnginePhase.READY]


async def publish_release(
    me: ModelEngine,
    generation: int | None,
    targets: list[PlannedTarget],
    store: ObjectStore,
    *,
    manifest: ManifestReader,
) -> None:
    """Write the record of `targets` (the Ready ones) unless the store already holds it."""
    manifests = []
    for planned in targets:
        found = await manifest(store, planned.build_key)
        if found is None:
            raise StoreError(f"manifest of {planned.build_key} disappeared from {store.uri}")
        manifests.append((planned.target.name, found))
    if not manifests:
        return
    record = make_release(
        store,
        namespace=me.metadata.namespace,
        name=me.metadata.name,
        generation=int(generation or 0),
        engines=manifests,
    )

    def write() -> None:
        existing = read_release(store, record.namespace, record.name)
        if (
            existing is not None
            and existing.engines == record.engines
            and existing.generation == record.generation
        ):
            return
        write_release(store, record)

    await asyncio.to_thread(write)


async def held_kinds(
    me: ModelEngine, generation: int | None, targets: list[PlannedTarget], store: ObjectStore
) -> list[str]:
    """The targets of the stored (earlier) release that a partial generation of `targets`
    would stop serving; [] when there is nothing to keep (no record, or this generation's)."""
    kinds = {(p.target.compute_capability, p.target.product) for p in targets}

    def read() -> list[str]:
        existing = read_release(store, me.metadata.namespace, me.metadata.name)
        if existing is None or existing.generation == int(generation or 0):
            return []
        return sorted({e.target for e in existing.engines if (e.compute_capability, e.product) not in kinds})

    return await asyncio.to_thread(read)
