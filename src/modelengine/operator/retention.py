"""Retention: the finalizer, and what deleting a ModelEngine deletes in the store.

A finalizer is set only where deletion has work to do (`retentionPolicy: Delete`), so
the default `Retain` costs no metadata writes. On deletion the engines this ModelEngine
built are removed unless another ModelEngine's plan still uses their build key (two
ModelEngines sharing a model share engines), each manifest last so a half-deleted engine
is never "complete"; then the release record, then the finalizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modelengine.api.models import RetentionPolicy, StorageSpec
from modelengine.operator.informers import Informers
from modelengine.operator.kube import KubeApi
from modelengine.operator.storage import StoreProvider
from modelengine.operator.workqueue import Key
from modelengine.store.layout import engine_prefix, manifest_key, release_key

FINALIZER = "modelengine.io/finalizer"
EventPoster = Callable[[dict[str, Any], str, str, str], None]


class Retention:
    def __init__(
        self, *, api: KubeApi, stores: StoreProvider, cache: Informers, post_event: Callable[[], EventPoster]
    ) -> None:
        self._api = api
        self._stores = stores
        self._cache = cache
        self._post_event = post_event  # looked up at call time: kopf's poster is set after wiring

    async def ensure_finalizer(self, key: Key, body: dict[str, Any], policy: RetentionPolicy) -> None:
        meta = body.setdefault("metadata", {})
        finalizers = list(meta.get("finalizers") or [])
        want = policy is RetentionPolicy.DELETE
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._api.patch_metadata(key[0], key[1], {"finalizers": new})
        meta["finalizers"] = new

    async def finalize(self, key: Key, body: dict[str, Any]) -> bool:
        """Run deletion's work; False when this operator holds no finalizer on it."""
        meta = body.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return False
        spec = body.get("spec") or {}
        if spec.get("retentionPolicy") == RetentionPolicy.DELETE.value:
            await self._delete_artifacts(key, body)
        new = [f for f in finalizers if f != FINALIZER]
        await self._api.patch_metadata(key[0], key[1], {"finalizers": new})
        meta["finalizers"] = new
        return True

    async def _delete_artifacts(self, key: Key, body: dict[str, Any]) -> None:
        storage = StorageSpec.model_validate((body.get("spec") or {}).get("storage") or {})
        store = await self._stores.store_for(key[0], storage)
        shared = self._cache.keys_used_by_others(key)
        engines = [e for e in (body.get("status") or {}).get("engines") or [] if isinstance(e, dict)]
        keys = {str(e["buildKey"]) for e in engines if e.get("buildKey")}
        deleted = sorted(keys - shared)

        def delete() -> None:
            for build_key in deleted:
                for obj in list(store.list(engine_prefix(build_key))):
                    if obj != manifest_key(build_key):
                        store.delete(obj)
                store.delete(manifest_key(build_key))  # last: a half-deleted engine is never "complete"
            store.delete(release_key(*key))

        await asyncio.to_thread(delete)
        kept = len(keys) - len(deleted)
        message = f"deleted {len(deleted)} engine(s) and the release record"
        if kept:
            message += f"; kept {kept} still used by another ModelEngine"
        self._post_event()(body, "Normal", "EnginesDeleted", message)
