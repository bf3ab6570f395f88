"""Engine sources: where the served engine comes from, and hot reload of a release record.

`ReleaseWatcher` polls `releases/<namespace>/<name>.json` in the store. The record's bytes
are hashed (the store offers no ETag on file://, and records are small), so an unchanged
record costs one GET and no parsing. When it changes, the engine for this accelerator is
selected again; if that is a different engine it is downloaded, verified, loaded,
warmed up and checked against its golden samples (acceptance, see `loader`) in a worker
thread beside the one being served, then switched in atomically (`DataPlane.install`).
A failed load keeps the current engine serving and is retried on the next poll; a failed
acceptance check is a failed load too, but not retried until the record changes; with no
engine at all the runtime stays not-ready with the reason.

`LocalEngine` serves one manifest on local disk once (no polling): for benchmarks and
for running an engine without a store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from modelengine.errors import first_line
from modelengine.runtime.accelerator import Accelerator
from modelengine.runtime.dataplane import DataPlane
from modelengine.runtime.loader import (
    AcceptanceFailed,
    BackendFactory,
    EngineLoadError,
    load_local_engine,
    load_release_engine,
)
from modelengine.runtime.selection import select_engine
from modelengine.store.base import NotFound, ObjectStore, StoreError
from modelengine.store.layout import release_key
from modelengine.store.trust import parse_release

log = logging.getLogger(__name__)


class ReleaseWatcher:
    def __init__(
        self,
        plane: DataPlane,
        *,
        store: ObjectStore,
        namespace: str,
        name: str,
        accelerator: Accelerator,
        installed: Mapping[str, str],
        cache_dir: Path,
        backend_factory: BackendFactory,
    ) -> None:
        self._plane = plane
        self._store = store
        self._key = release_key(namespace, name)
        self._accel = accelerator
        self._installed = dict(installed)
        self._cache_dir = cache_dir
        self._factory = backend_factory
        self._seen: str | None = None  # sha256 of the last record acted on
        self._switch_failed = False
        self.loads = 0

    @property
    def record_uri(self) -> str:
        return self._store.url_for(self._key)

    async def refresh(self) -> None:
        """One poll: act on the release record if it changed since the last one."""
        try:
            raw = await asyncio.to_thread(self._store.get_bytes, self._key)
        except NotFound:
            self._plane.set_not_ready(f"release record {self.record_uri} does not exist")
            return
        except StoreError as err:
            self._plane.set_not_ready(f"cannot read the release record: {err}")
            return
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._seen:
            return
        try:
            record = parse_release(raw, where=f"release record {self.record_uri}")
        except StoreError as err:
            self._seen = digest
            self._plane.set_not_ready(first_line(err))
            if self._plane.active is not None:
                log.error("keeping the current engine: %s", first_line(err))
            return
        selection = select_engine(self._accel, record, self._installed)
        self._plane.set_detail(
            release=self.record_uri, release_generation=record.generation, selection=selection.reason
        )
        if selection.engine is None:
            self._seen = digest
            self._plane.set_not_ready(selection.reason)
            if self._plane.active is not None:
                log.error(
                    "new release has no engine for this machine, keeping the current one: %s",
                    selection.reason,
                )
            return
        for note in selection.skipped:
            log.warning("skipped engine %s", note)
        active = self._plane.active
        if (
            active is not None
            and active.info.build_key == selection.engine.build_key
            and active.info.sha256 == selection.engine.sha256
        ):
            self._seen = digest
            return
        log.info("loading %s", selection.reason)
        try:
            loaded = await asyncio.to_thread(
                load_release_engine,
                self._store,
                selection.engine,
                cache_dir=self._cache_dir,
                backend_factory=self._factory,
            )
        except EngineLoadError as err:
            # A failed acceptance check is deterministic: not retried until the record changes.
            # Anything else is retried on the next poll (a download may be transient).
            if isinstance(err, AcceptanceFailed):
                self._seen = digest
            self._plane.metrics.reloads.labels("failed").inc()
            self._plane.set_not_ready(str(err))
            if self._plane.active is not None:
                log.error("engine switch failed, keeping the current engine: %s", err)
                # shown on /v2/health/ready (still 200): this pod serves the previous engine
                self._plane.set_detail(switch_failed=str(err))
                self._switch_failed = True
            return
        self._seen = digest
        self.loads += 1
        self._plane.metrics.reloads.labels("loaded").inc()
        self._plane.set_detail(acceptance=loaded.acceptance)
        if self._switch_failed:
            self._plane.set_detail(switch_failed=None)
            self._switch_failed = False
        await self._plane.install(loaded)

    async def run(self, poll_seconds: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("release poll failed")
            if poll_seconds <= 0:
                return
            await asyncio.sleep(poll_seconds)


class LocalEngine:
    """Serve one engine from a manifest.json on local disk."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        manifest_path: Path,
        installed: Mapping[str, str],
        backend_factory: BackendFactory,
    ) -> None:
        self._plane = plane
        self._path = manifest_path
        self._installed = dict(installed)
        self._factory = backend_factory

    async def run(self, poll_seconds: float = 0) -> None:
        del poll_seconds
        self._plane.set_detail(manifest=str(self._path))
        try:
            loaded = await asyncio.to_thread(
                load_local_engine, self._path, installed=self._installed, backend_factory=self._factory
            )
        except EngineLoadError as err:
            self._plane.set_not_ready(str(err))
            return
        self._plane.set_detail(acceptance=loaded.acceptance)
        await self._plane.install(loaded)
