"""The release record a Ready ModelEngine publishes for its runtime pods.

`releases/<namespace>/<name>.json` lists the engine of every Ready target (uri, sha256,
target); the runtime sidecar reads it and picks the engine for the GPU it finds. It is
written when the status turns Ready or changes while Ready, and only when it differs from
what the store holds, so a restarted operator rewrites nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modelengine.api.models import ModelEngine
from modelengine.operator.plan import Plan
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.manifest import EngineManifest
from modelengine.store.publish import read_release, write_release
from modelengine.store.release import make_release

ManifestReader = Callable[[ObjectStore, str], Awaitable[EngineManifest | None]]


async def publish_release(
    me: ModelEngine, generation: int | None, plan: Plan, store: ObjectStore, *, manifest: ManifestReader
) -> None:
    manifests = []
    for planned in plan.targets:
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
