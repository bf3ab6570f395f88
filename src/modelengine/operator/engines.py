"""The per-target engine state machine: cached, queued, building, ready or failed.

For one planned target of one ModelEngine, `EngineStates.status_of` reads what is known
(the previous status, the builder Job in the cache, the manifest in the store) and
answers the target's `EngineStatus`, starting a builder Job when nothing else will
produce the engine:

    previous Ready                   → Ready (a published manifest never changes)
    Job running                      → Building
    Job succeeded + manifest         → Ready (cached when another ModelEngine's Job built it)
    Job failed                       → Failed, with the builder's own reason
    no Job, manifest in the store    → Ready, cached (no Job at all)
    no Job, previous Failed          → Failed (its Job is gone; a spec change gives a new key)
    no slot                          → Queued
    otherwise                        → Building, after creating the Job

A Job the API server refuses to create (422: an invalid object) is Failed with the
server's reason and no Job name (`refused`): the controller writes that status, posts an
Event and retries with backoff instead of retrying silently.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelengine.api.models import EnginePhase, EngineStatus, ModelEngine
from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.operator.build_jobs import (
    LABEL_NAME,
    build_job,
    job_name,
    job_state,
)
from modelengine.operator.builds import Builds
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.metrics import Metrics
from modelengine.operator.names import label_value
from modelengine.operator.plan import PlannedTarget
from modelengine.operator.workqueue import Key
from modelengine.store.base import ObjectStore
from modelengine.store.layout import engine_key
from modelengine.store.manifest import EngineManifest
from modelengine.store.publish import read_manifest

log = logging.getLogger("modelengine.operator")


class EngineStates:
    def __init__(
        self,
        *,
        api: KubeApi,
        cache: Informers,
        builds: Builds,
        metrics: Metrics,
        config: OperatorConfig,
    ) -> None:
        self._api = api
        self._cache = cache
        self._builds = builds
        self._metrics = metrics
        self._config = config
        self._manifests: dict[tuple[str, str], EngineManifest] = {}
        self._counted: set[Key] = set()  # finished jobs already counted in metrics

    async def status_of(
        self,
        key: Key,
        body: dict[str, Any],
        me: ModelEngine,
        planned: PlannedTarget,
        store: ObjectStore,
        previous: EngineStatus | None,
    ) -> EngineStatus:
        target, build_key = planned.target, planned.build_key
        base = EngineStatus(
            target=target.name,
            build_key=build_key,
            phase=EnginePhase.BUILDING,
            backend=target.backend.value,
            backend_version=self._config.backend_version(target.backend),
            compute_capability=target.compute_capability,
            product=target.product,
        )
        if previous is not None and previous.phase is EnginePhase.READY:
            return previous  # a published manifest never changes: nothing to re-read
        name = job_name(build_key)
        job = self._cache.jobs.get((key[0], name))
        if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            return await self._from_job(key, base, job, store)
        manifest = await self.manifest(store, build_key)
        if manifest is not None:
            self._metrics.cache_hits.inc()
            return _ready(base, manifest, store, job_name=None, cached=True)
        if previous is not None and previous.phase is EnginePhase.FAILED and previous.job_name:
            return previous  # its Job is gone (TTL); a changed spec gives a new key and a new build
        if not self._builds.may_start(target):
            return base.model_copy(update={"phase": EnginePhase.QUEUED, "reason": "waiting for a build slot"})
        manifest_job = build_job(
            me=me,
            uid=(body.get("metadata") or {}).get("uid"),
            generation=int((body.get("metadata") or {}).get("generation") or 1),
            target=target,
            build_key=build_key,
            config=self._config,
        )
        try:
            await self._builds.start(key, manifest_job, kind=target.name)
        except ApiError as err:
            if not 400 <= err.status < 500 or err.status == 429:
                raise  # the server or the network: retried with backoff, nothing to report
            reason = f"{target.name}: the API server refused Job {name}: {redact(first_line(err))}"
            return base.model_copy(update={"phase": EnginePhase.FAILED, "reason": reason})
        return base.model_copy(update={"job_name": name})

    async def _from_job(
        self, key: Key, base: EngineStatus, job: dict[str, Any], store: ObjectStore
    ) -> EngineStatus:
        name = job["metadata"]["name"]
        state = job_state(job)
        if state == "Running":
            return base.model_copy(update={"job_name": name})
        if state == "Succeeded":
            manifest = await self.manifest(store, base.build_key)
            if manifest is None:
                return _failed(base, name, "the builder succeeded but published no manifest")
            self._count_finished((key[0], name), base.target, manifest.build_seconds, ok=True)
            labels = (job.get("metadata") or {}).get("labels") or {}
            ours = labels.get(LABEL_NAME) == label_value(key[1])
            if not ours:
                self._metrics.cache_hits.inc()  # built for another ModelEngine: a cache hit here
            return _ready(base, manifest, store, job_name=name if ours else None, cached=not ours)
        reason = await self._builds.failure_reason(key[0], job)
        self._count_finished((key[0], name), base.target, None, ok=False)
        return _failed(base, name, reason)

    async def manifest(self, store: ObjectStore, build_key: str) -> EngineManifest | None:
        cache_key = (store.uri, build_key)
        cached = self._manifests.get(cache_key)
        if cached is None:
            cached = await asyncio.to_thread(read_manifest, store, build_key)
            if cached is not None:
                self._manifests[cache_key] = cached
        return cached

    def _count_finished(self, job: Key, target: str, seconds: float | None, *, ok: bool) -> None:
        if job in self._counted:
            return
        self._counted.add(job)
        if ok:
            self._metrics.builds_succeeded.labels(target=target).inc()
            if seconds is not None:
                self._metrics.build_duration.labels(target=target).observe(seconds)
        else:
            self._metrics.builds_failed.labels(target=target).inc()


def refused(engine: EngineStatus) -> bool:
    """Whether the engine failed because its Job could not even be created."""
    return engine.phase is EnginePhase.FAILED and engine.job_name is None and not engine.cached


def _failed(base: EngineStatus, job_name: str, reason: str) -> EngineStatus:
    return base.model_copy(update={"phase": EnginePhase.FAILED, "job_name": job_name, "reason": reason})


def _ready(
    base: EngineStatus, manifest: EngineManifest, store: ObjectStore, *, job_name: str | None, cached: bool
) -> EngineStatus:
    validation = None
    if manifest.validation is not None:
        validation = {
            "maxAbsError": manifest.validation.max_abs_error,
            "maxRelError": manifest.validation.max_rel_error,
            "samples": float(manifest.validation.samples),
        }
    return base.model_copy(
        update={
            "phase": EnginePhase.READY,
            "backend_version": manifest.backend_version,
            "uri": store.url_for(engine_key(manifest.build_key, manifest.engine_file)),
            "sha256": manifest.sha256,
            "size": manifest.size,
            "build_seconds": round(manifest.build_seconds, 3),
            "validation": validation,
            "job_name": job_name,
            "cached": cached,
            "reason": None,
        }
    )
