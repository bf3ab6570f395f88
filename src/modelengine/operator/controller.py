"""The controller: informer caches + a work queue + one reconcile per ModelEngine.

controller-runtime's shape on kopf's watching, peering, event posting and liveness. kopf
delivers events to `observe_*`, which update the caches (`informers`) and queue the
ModelEngines concerned (`workqueue`); workers run `reconcile`, which reads everything from
memory and delegates each step to the module that owns it:

    spec → store (`storage`) → model digest (`sources`: source record, or a resolve Job)
    → plan (`plan`) → per-target engine state (`engines`,
    starting Jobs through `builds`) → status (`status`, written by `status_writer`) →
    release record (`release_record`: once every target is Ready or Failed, the Ready
    engines) → serving objects (`serving`: groups for the kinds with a Ready engine)

and deletion to `retention`. What keeps the API traffic at its minimum: reads come from
the watch streams, never GETs (except a failed Job's Pods and a storage Secret, cached);
status is computed whole and written in one merge patch only when it differs; no kopf
progress or diff-base annotations; a finalizer only where deletion has work to do.

Failures (409s, 500s, timeouts, store errors) make a reconcile raise; the queue retries
the key with exponential backoff, and every step is idempotent (Job names derive from
build keys, so a repeated create answers 409 and the existing Job is adopted).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelengine.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    EnginePhase,
    ModelEngine,
    Phase,
)
from modelengine.api.targets import GpuKind
from modelengine.api.validation import (
    effective_backend,
)
from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.operator.build_jobs import LABEL_KEY
from modelengine.operator.builds import Builds
from modelengine.operator.config import OperatorConfig
from modelengine.operator.engines import EngineStates, refused
from modelengine.operator.informers import Informers, key_of
from modelengine.operator.inputs import Inputs
from modelengine.operator.job_watch import JobWatch
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.leader import LeaseElector
from modelengine.operator.limiter import BuildLimiter
from modelengine.operator.metrics import Metrics
from modelengine.operator.plan import Plan, make_plan
from modelengine.operator.priming import prime
from modelengine.operator.release_record import (
    RELEASED_PHASES,
    held_kinds,
    publish_release,
    released_targets,
    should_publish,
)
from modelengine.operator.retention import Retention
from modelengine.operator.rollouts import Rollouts
from modelengine.operator.serving import ServingSync
from modelengine.operator.serving_groups import GroupPlan
from modelengine.operator.sources import ModelSources
from modelengine.operator.status import desired_status, parse_status, with_serving
from modelengine.operator.status_writer import EventPoster, StatusWriter
from modelengine.operator.storage import StoreProvider
from modelengine.operator.workqueue import Key, WorkQueue

log = logging.getLogger("modelengine.operator")


class Controller:
    def __init__(
        self,
        *,
        config: OperatorConfig,
        api: KubeApi,
        stores: StoreProvider,
        metrics: Metrics | None = None,
        post_event: EventPoster | None = None,
        elector: LeaseElector | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.stores = stores
        self.metrics = metrics or Metrics()
        self.elector = elector
        self.namespaces: list[str] = []  # watched namespaces; empty = all
        self.cache = Informers()
        self.queue = WorkQueue(
            retry_seconds=config.retry_seconds,
            max_retry_seconds=config.max_retry_seconds,
            outcomes=self.metrics,
            gate=elector,
        )
        limiter = BuildLimiter(max_builds=config.max_builds, max_per_kind=config.max_builds_per_kind)
        self.builds = Builds(api=api, cache=self.cache, limiter=limiter, metrics=self.metrics)
        self.engines = EngineStates(
            api=api, cache=self.cache, builds=self.builds, metrics=self.metrics, config=config
        )
        self.status = StatusWriter(
            api=api,
            interval=config.status_interval_seconds,
            requeue=self.queue.add_after,
            post_event=post_event or (lambda body, etype, reason, message: None),
        )
        self.retention = Retention(
            api=api, stores=stores, cache=self.cache, post_event=lambda: self.status.post_event
        )
        self.sources = ModelSources(
            api=api, stores=stores, cache=self.cache, builds=self.builds, config=config
        )
        self.inputs = Inputs(status=self.status, cache=self.cache, sources=self.sources, stores=stores)
        self.serving = ServingSync(api=api, config=config, cache=self.cache)
        self.rollouts = Rollouts(api=api, cache=self.cache)
        self._workers: list[asyncio.Task[None]] = []

    @property
    def idle(self) -> asyncio.Event:
        return self.queue.idle

    @property
    def post_event(self) -> EventPoster:
        return self.status.post_event

    @post_event.setter
    def post_event(self, poster: EventPoster) -> None:
        self.status.post_event = poster

    # ---- watch events (called by kopf handlers; no I/O here) ----

    def observe_modelengine(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        if self.cache.observe_modelengine(event_type, body):
            self.queue.add(key)
        elif event_type == "DELETED":
            self._forget(key)

    def observe_job(self, event_type: str | None, body: dict[str, Any]) -> None:
        observed = self.cache.observe_job(event_type, body)
        if observed is None:
            return
        job_key, users = observed
        freed = self.builds.observe(event_type, job_key)
        for user in users:
            self.queue.add(user)
        if freed:
            for waiting in self.builds.limiter.waiting():
                self.queue.add(waiting)

    def observe_deployment(self, event_type: str | None, body: dict[str, Any]) -> None:
        for key in self.cache.observe_deployment(event_type, body):
            self.queue.add(key)

    def observe_node(self, event_type: str | None, body: dict[str, Any]) -> None:
        for key in self.cache.observe_node(event_type, body):
            self.queue.add(key)

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)

    # ---- workers ----

    def start(self) -> None:
        """Start the workers (idempotent), from the context they post events in."""
        if self._workers:
            return
        if self.elector is not None:
            self._workers.append(asyncio.create_task(self.elector.run(), name="modelengine-lease"))
        self._workers.append(asyncio.create_task(self._prime_and_work(), name="modelengine-worker-0"))

    async def _prime_and_work(self) -> None:
        jobs = JobWatch(
            api=self.api,
            namespaces=self.namespaces,
            label_selector=LABEL_KEY,
            observe=self.observe_job,
            known=lambda: self.cache.jobs,
            retry_seconds=self.config.retry_seconds,
            on_restart=lambda reason: self.metrics.job_watch_restarts.labels(reason=reason).inc(),
        )
        self._workers.append(asyncio.create_task(jobs.run(), name="modelengine-job-watch"))
        await jobs.synced.wait()
        await prime(
            api=self.api,
            namespaces=self.namespaces,
            on_node=self.cache.observe_node,
            on_deployment=self.cache.observe_deployment,
            retry_seconds=self.config.retry_seconds,
        )
        for i in range(1, self.config.workers):
            self._workers.append(
                asyncio.create_task(self.queue.work(self.reconcile), name=f"modelengine-worker-{i}")
            )
        await self.queue.work(self.reconcile)

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    # ---- reconcile ----

    async def reconcile(self, key: Key) -> None:
        body = self.cache.modelengines.get(key)
        if body is None:
            return
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            if await self.retention.finalize(key, body):
                self._forget(key)
            return
        generation = meta.get("generation")
        current = parse_status(body.get("status"))
        me = await self.inputs.parse(key, body, generation)
        if me is None:
            return
        await self.retention.ensure_finalizer(key, body, me.spec.retention_policy)
        store = await self.inputs.store(key, body, me, generation)
        digest = await self.inputs.model_digest(key, body, me, generation, store)
        if digest is None:
            return  # resolving the source, or failed to: status says which
        plan = self._plan(me, digest, current.engines)
        self.cache.set_plan(key, {p.build_key for p in plan.targets})
        previous = {e.build_key: e for e in current.engines}
        engines = [
            await self.engines.status_of(key, body, me, planned, store, previous.get(planned.build_key))
            for planned in plan.targets
        ]
        self.builds.record_queued(key, sum(e.phase is EnginePhase.QUEUED for e in engines))
        await self.builds.supersede(key)
        desired = desired_status(
            engines=engines,
            skipped=plan.skipped,
            orphaned=plan.orphaned,
            generation=generation,
            model_digest=digest,
            current=current,
        )
        groups = self.serving.plan(me, engines, self.cache.inventory.kinds(), self.metrics)
        if groups is not None:
            desired = with_serving(desired, await self.rollouts.statuses(key, me, groups), current)
            self.rollouts.announce(self.status.post_event, body, current, desired)
        ready = released_targets(plan.targets, engines) if desired.phase in RELEASED_PHASES else []
        held = (
            await held_kinds(me, generation, ready, store) if desired.phase is Phase.PARTIALLY_READY else []
        )
        if should_publish(current, desired, generation):
            if held:
                message = f"generation {generation} did not build for {', '.join(held)}: the earlier release keeps serving"
                self.status.post_event(body, "Warning", "ReleaseHeld", message[:1000])
            else:
                await publish_release(me, generation, ready, store, manifest=self.engines.manifest)
        await self.status.write(key, body, desired, cached=self.cache.modelengines.get(key))
        self.inputs.report_refused(key, body, [e.reason or "" for e in engines if refused(e)])
        await self._serve(key, body, me, desired.phase, groups, hold=bool(held))

    def _plan(self, me: ModelEngine, digest: str, previous: list[Any]) -> Plan:
        backends = {effective_backend(me.spec, t) for t in me.spec.targets}
        return make_plan(
            me.spec,
            gpu_kinds=self.cache.inventory.kinds(),
            products=self.cache.inventory.products(),
            model_digest=digest,
            versions={b: self.config.backend_version(b) for b in backends},
            previous_engines=previous,
        )

    async def _serve(
        self,
        key: Key,
        body: dict[str, Any],
        me: ModelEngine,
        phase: Phase,
        groups: GroupPlan | None,
        *,
        hold: bool,
    ) -> None:
        empty = GroupPlan(groups=[], blocked=[], without_engine=[])
        try:
            await self.serving.reconcile(
                key, me, (body.get("metadata") or {}).get("uid"), phase, groups or empty, hold=hold
            )
        except ApiError as err:
            if 400 <= err.status < 500 and err.status not in (404, 409, 429):
                self.status.post_event(body, "Warning", "ServingRefused", redact(first_line(err))[:1000])
            raise

    def _forget(self, key: Key) -> None:
        self.status.forget(key)
        self.serving.forget(key)
        self.cache.set_plan(key, set())
        self.builds.forget(key)

    def gpu_kinds(self) -> list[GpuKind]:
        return self.cache.inventory.kinds()


def event_ref(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    }
