"""The controller: informer caches + a work queue + one reconcile per ModelEngine.

kopf delivers every event of ModelEngines, builder Jobs and Nodes to `observe_*`, which
only update in-memory caches and queue the ModelEngines concerned; workers then run
`reconcile` with everything it needs already in memory. This is controller-runtime's
shape, on kopf's watching, peering, event posting and liveness, and it is what keeps the
API traffic at its minimum:

- reads come from the watch streams, never GETs (except a failed Job's Pod, for the
  builder's own failure reason, and a storage Secret, cached);
- status is computed whole and written in one merge patch, only when it differs from
  the object's current status (re-applying or restarting changes nothing → no writes);
- no kopf progress or diff-base annotations: event handlers are stateless, the state is
  the status itself (see docs/operator.md for the measured effect);
- a finalizer only where deletion has work to do (`retentionPolicy: Delete`).

Failures (409s, 500s, timeouts, store errors) make a reconcile raise; the key is
retried with exponential backoff, and every step is idempotent: Job names derive from
build keys, so a repeated create answers 409 and the existing Job is adopted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn

from modelengine.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    EnginePhase,
    EngineStatus,
    ModelEngine,
    RetentionPolicy,
)
from modelengine.api.targets import GpuKind
from modelengine.api.validation import SpecError, effective_backend, parse_modelengine
from modelengine.logs import redact
from modelengine.operator import jobs as jobspec
from modelengine.operator import serving as servingspec
from modelengine.operator.config import OperatorConfig
from modelengine.operator.digests import DigestCache
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.leader import LeaseElector
from modelengine.operator.limiter import BuildLimiter
from modelengine.operator.metrics import Metrics
from modelengine.operator.nodes import NodeInventory
from modelengine.operator.plan import Plan, PlannedTarget, make_plan
from modelengine.operator.status import desired_status, differs
from modelengine.operator.storage import StoreProvider
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.layout import engine_key, engine_prefix, manifest_key, release_key
from modelengine.store.manifest import EngineManifest
from modelengine.store.publish import read_manifest, read_release, utc_now, write_release
from modelengine.store.release import make_release

log = logging.getLogger("modelengine.operator")

FINALIZER = "modelengine.io/finalizer"
Key = tuple[str, str]  # (namespace, name)
EventPoster = Callable[[dict[str, Any], str, str, str], None]  # (body, type, reason, message)


class Controller:
    def __init__(
        self,
        *,
        config: OperatorConfig,
        api: KubeApi,
        stores: StoreProvider,
        digests: DigestCache | None = None,
        metrics: Metrics | None = None,
        post_event: EventPoster | None = None,
        elector: LeaseElector | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.stores = stores
        self.digests = digests or DigestCache()
        self.metrics = metrics or Metrics()
        self.post_event = post_event or (lambda body, etype, reason, message: None)
        self.elector = elector
        self.namespaces: list[str] = []  # watched namespaces; empty = all
        self.inventory = NodeInventory()
        self.limiter = BuildLimiter(max_builds=config.max_builds, max_per_kind=config.max_builds_per_kind)
        self.modelengines: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self._key_users: dict[tuple[str, str], set[Key]] = {}  # (namespace, build key) → users
        self._plans: dict[Key, set[str]] = {}
        self._manifests: dict[tuple[str, str], EngineManifest] = {}
        self._failures: dict[Key, str] = {}  # failed job → the builder's reason
        self._counted: set[Key] = set()  # finished jobs already counted in metrics
        self._queued: dict[Key, int] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures_in_row: dict[Key, int] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._last_write: dict[Key, float] = {}
        self._deferred: set[Key] = set()
        self._serving: dict[Key, str] = {}  # rendered serving objects known to match the cluster
        self.idle = asyncio.Event()
        self.idle.set()

    # ---- watch events (called by kopf handlers; no I/O here) ----

    def observe_modelengine(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self.modelengines.pop(key, None)
            self._forget(key)
            return
        cached = self.modelengines.get(key)
        if cached is not None and _older(body, cached):
            return  # a replayed, stale copy (e.g. a watch restart): our cache knows better
        self.modelengines[key] = _plain(body)
        self.enqueue(key)

    def observe_job(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = _key(body)
        labels = body.get("metadata", {}).get("labels") or {}
        build_key = labels.get(jobspec.LABEL_KEY)
        if build_key is None:
            return
        if event_type == "DELETED":
            self.jobs.pop(key, None)
            freed = self.limiter.set_finished(key[1])
        else:
            job = _plain(body)
            self.jobs[key] = job
            if jobspec.job_state(job) == "Running":
                self.limiter.set_running(key[1], labels.get(jobspec.LABEL_TARGET, "unknown"))
                freed = False
            else:
                freed = self.limiter.set_finished(key[1])
        self.metrics.jobs_in_flight.set(self.limiter.running())
        users = set(self._key_users.get((key[0], build_key), set()))
        owner = labels.get(jobspec.LABEL_NAME)
        if owner and (key[0], owner) in self.modelengines:
            users.add((key[0], owner))
        for user in sorted(users):
            self.enqueue(user)
        if freed or event_type == "DELETED":
            for waiting in self.limiter.waiting():
                self.enqueue(waiting)

    def observe_node(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = body.get("metadata", {}).get("name", "")
        if event_type == "DELETED":
            changed = self.inventory.remove(name)
        else:
            changed = self.inventory.update(name, body.get("metadata", {}).get("labels") or {})
        if changed:
            log.info(
                "GPU kinds now: %s",
                ", ".join(f"{k.product} ({k.compute_capability})" for k in self.inventory.kinds()),
            )
            for key, me in list(self.modelengines.items()):
                targets = (me.get("spec") or {}).get("targets") or []
                if any(isinstance(t, dict) and (t.get("auto") or t.get("product")) for t in targets):
                    self.enqueue(key)

    # ---- work queue ----

    def enqueue(self, key: Key) -> None:
        if key in self._pending:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._pending.add(key)
        self.idle.clear()
        self._queue.put_nowait(key)

    def start(self) -> None:
        """Start the workers (idempotent), from the context they post events in."""
        if self._workers:
            return
        if self.elector is not None:
            self._workers.append(asyncio.create_task(self.elector.run(), name="modelengine-lease"))
        self._workers.append(asyncio.create_task(self._prime_and_work(), name="modelengine-worker-0"))

    async def _prime_and_work(self) -> None:
        # Know the GPU kinds and the builder Jobs before the first plan: otherwise `auto`
        # would plan for no kinds, or a restarted operator would re-create Jobs it has not
        # seen yet (409s). One list each, not per object; the watches keep them current.
        while True:
            try:
                for job in await self._list_jobs():
                    self.observe_job("ADDED", job)
                for node in await self.api.list_nodes():
                    self.inventory.update(
                        node.get("metadata", {}).get("name", ""), node.get("metadata", {}).get("labels") or {}
                    )
                break
            except ApiError as err:
                log.warning("cannot list Nodes yet (retrying): %s", err)
                await asyncio.sleep(self.config.retry_seconds)
        for i in range(1, self.config.workers):
            self._workers.append(asyncio.create_task(self._worker(), name=f"modelengine-worker-{i}"))
        await self._worker()

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def _list_jobs(self) -> list[dict[str, Any]]:
        selector = jobspec.LABEL_KEY
        if not self.namespaces:
            return await self.api.list_jobs(None, selector)
        out: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            out.extend(await self.api.list_jobs(namespace, selector))
        return out

    async def _worker(self) -> None:
        while True:
            if self.elector is not None:
                await self.elector.leading.wait()  # a passive replica keeps warm caches, no writes
            key = await self._queue.get()
            self._pending.discard(key)
            self._active.add(key)
            try:
                await self.reconcile(key)
                self._failures_in_row.pop(key, None)
                self.metrics.reconciles.labels(result="ok").inc()
            except Exception as err:  # retried with backoff; never kills the worker
                n = self._failures_in_row.get(key, 0) + 1
                self._failures_in_row[key] = n
                delay = min(self.config.retry_seconds * 2 ** (n - 1), self.config.max_retry_seconds)
                self.metrics.reconciles.labels(result="retry").inc()
                log.warning("reconcile %s/%s failed (retry in %.0fs): %s", *key, delay, redact(str(err)))
                asyncio.get_running_loop().call_later(delay, self.enqueue, key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                if not self._pending and not self._active:
                    self.idle.set()

    # ---- reconcile ----

    async def reconcile(self, key: Key) -> None:
        body = self.modelengines.get(key)
        if body is None:
            return
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            await self._finalize(key, body)
            return
        generation = meta.get("generation")
        current = body.get("status") or {}
        try:
            me = parse_modelengine(
                {
                    "apiVersion": body.get("apiVersion"),
                    "kind": body.get("kind"),
                    "metadata": {"name": key[1], "namespace": key[0]},
                    "spec": body.get("spec"),
                }
            )
        except SpecError as err:
            desired = desired_status(
                engines=[],
                skipped=[],
                orphaned=[],
                generation=generation,
                model_digest=None,
                current=current,
                problems=err.problems,
            )
            await self._write_status(key, body, desired)
            self._set_plan(key, set())
            return
        await self._ensure_finalizer(key, body, me)
        try:
            digest = await self.digests.digest(me.spec.model, endpoint_url=me.spec.storage.endpoint_url)
        except (StoreError, OSError, ValueError) as err:
            message = f"spec.model.source {me.spec.model.source}: {redact(str(err).splitlines()[0] if str(err) else type(err).__name__)}"
            await self._fail_store(key, body, generation, None, current, message)
        backends = {effective_backend(me.spec, t) for t in me.spec.targets}
        versions = {b: self.config.backend_version(b) for b in backends}
        plan = make_plan(
            me.spec,
            gpu_kinds=self.inventory.kinds(),
            products=self.inventory.products(),
            model_digest=digest,
            versions=versions,
            previous_engines=[e for e in current.get("engines") or [] if isinstance(e, dict)],
        )
        self._set_plan(key, {p.build_key for p in plan.targets})
        try:
            store = await self.stores.store_for(key[0], me.spec.storage)
        except StoreError as err:
            message = f"spec.storage: {redact(str(err))}"
            await self._fail_store(key, body, generation, digest, current, message)
        previous = {e.get("buildKey"): e for e in current.get("engines") or [] if isinstance(e, dict)}
        engines: list[dict[str, Any]] = []
        for planned in plan.targets:
            engines.append(await self._engine(key, body, me, planned, store, previous.get(planned.build_key)))
        queued = sum(e["phase"] == EnginePhase.QUEUED.value for e in engines)
        if queued:
            self._queued[key] = queued
            self.limiter.wait(key)
        else:
            self._queued.pop(key, None)
            self.limiter.done_waiting(key)
        self.metrics.queue_length.set(sum(self._queued.values()))
        await self._supersede(key, body, plan)
        desired = desired_status(
            engines=engines,
            skipped=plan.skipped,
            orphaned=[{**e, "phase": EnginePhase.ORPHANED.value} for e in plan.orphaned],
            generation=generation,
            model_digest=digest,
            current=current,
        )
        if desired["phase"] == "Ready" and differs(current, desired):
            await self._write_release(me, generation, digest, plan, store)
        await self._write_status(key, body, desired)
        await self._reconcile_serving(key, body, me, desired["phase"], plan)

    async def _engine(
        self,
        key: Key,
        body: dict[str, Any],
        me: ModelEngine,
        planned: PlannedTarget,
        store: ObjectStore,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        target, build_key = planned.target, planned.build_key
        version = self.config.backend_version(target.backend)
        base = EngineStatus(
            target=target.name,
            build_key=build_key,
            phase=EnginePhase.BUILDING,
            backend=target.backend.value,
            backend_version=version,
            compute_capability=target.compute_capability,
            product=target.product,
        )
        if previous is not None and previous.get("phase") == EnginePhase.READY.value:
            return previous  # a published manifest never changes: nothing to re-read
        name = jobspec.job_name(build_key)
        job = self.jobs.get((key[0], name))
        if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            state = jobspec.job_state(job)
            if state == "Running":
                return base.model_copy(update={"job_name": name}).to_wire()
            if state == "Succeeded":
                manifest = await self._manifest(store, build_key)
                if manifest is None:
                    return self._failed(base, name, "the builder succeeded but published no manifest")
                self._count_finished((key[0], name), target.name, manifest.build_seconds, ok=True)
                ours = ((job.get("metadata") or {}).get("labels") or {}).get(jobspec.LABEL_NAME) == key[1][
                    :63
                ]
                if not ours:
                    self.metrics.cache_hits.inc()  # built for another ModelEngine: a cache hit here
                return _ready(base, manifest, store, job_name=name if ours else None, cached=not ours)
            reason = await self._failure_reason(key[0], job)
            self._count_finished((key[0], name), target.name, None, ok=False)
            return self._failed(base, name, reason)
        manifest = await self._manifest(store, build_key)
        if manifest is not None:
            self.metrics.cache_hits.inc()
            return _ready(base, manifest, store, job_name=None, cached=True)
        if previous is not None and previous.get("phase") == EnginePhase.FAILED.value:
            return previous  # its Job is gone (TTL); a changed spec gives a new key and a new build
        if not self.limiter.can_start(target.name):
            return base.model_copy(
                update={"phase": EnginePhase.QUEUED, "reason": "waiting for a build slot"}
            ).to_wire()
        manifest_job = jobspec.build_job(
            me=me,
            uid=(body.get("metadata") or {}).get("uid"),
            generation=int((body.get("metadata") or {}).get("generation") or 1),
            target=target,
            build_key=build_key,
            config=self.config,
        )
        # Seen as running until the watch delivers the real object: no second create.
        self.jobs[(key[0], name)] = {
            "metadata": manifest_job["metadata"],
            "spec": manifest_job["spec"],
            "status": {},
        }
        try:
            await self.api.create_job(key[0], manifest_job)
            self.metrics.builds_started.labels(target=target.name).inc()
            log.info("%s/%s: started %s for %s", *key, name, target.name)
        except ApiError as err:
            if err.status != 409:
                self.jobs.pop((key[0], name), None)
                raise
            log.info("%s/%s: adopting existing %s", *key, name)
        self.limiter.set_running(name, target.name)
        self.metrics.jobs_in_flight.set(self.limiter.running())
        return base.model_copy(update={"job_name": name}).to_wire()

    def _failed(self, base: EngineStatus, job_name: str, reason: str) -> dict[str, Any]:
        return base.model_copy(
            update={"phase": EnginePhase.FAILED, "job_name": job_name, "reason": reason}
        ).to_wire()

    def _count_finished(self, job: Key, target: str, seconds: float | None, *, ok: bool) -> None:
        if job in self._counted:
            return
        self._counted.add(job)
        if ok:
            self.metrics.builds_succeeded.labels(target=target).inc()
            if seconds is not None:
                self.metrics.build_duration.labels(target=target).observe(seconds)
        else:
            self.metrics.builds_failed.labels(target=target).inc()

    async def _manifest(self, store: ObjectStore, build_key: str) -> EngineManifest | None:
        cache_key = (store.uri, build_key)
        cached = self._manifests.get(cache_key)
        if cached is None:
            cached = await asyncio.to_thread(read_manifest, store, build_key)
            if cached is not None:
                self._manifests[cache_key] = cached
        return cached

    async def _failure_reason(self, namespace: str, job: dict[str, Any]) -> str:
        name = job["metadata"]["name"]
        cached = self._failures.get((namespace, name))
        if cached is not None:
            return cached
        reason = None
        try:
            pods = await self.api.job_pods(namespace, name)
        except ApiError as err:
            log.warning("cannot read the Pods of %s/%s: %s", namespace, name, err)
            pods = []
        for pod in sorted(
            pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True
        ):
            reason = _termination_reason(pod)
            if reason:
                break
        reason = redact(reason or jobspec.job_failure_reason(job))
        self._failures[(namespace, name)] = reason
        return reason

    async def _supersede(self, key: Key, body: dict[str, Any], plan: Plan) -> None:
        """Delete this ModelEngine's Jobs whose keys no current plan uses any more."""
        uid = (body.get("metadata") or {}).get("uid")
        for (namespace, name), job in list(self.jobs.items()):
            if namespace != key[0] or (job.get("metadata") or {}).get("deletionTimestamp"):
                continue
            labels = (job.get("metadata") or {}).get("labels") or {}
            owners = [o.get("uid") for o in (job.get("metadata") or {}).get("ownerReferences") or []]
            if labels.get(jobspec.LABEL_NAME) != key[1] and uid not in owners:
                continue
            build_key = labels.get(jobspec.LABEL_KEY, "")
            if self._key_users.get((namespace, build_key)):
                continue
            try:
                await self.api.delete_job(namespace, name)
                log.info("%s/%s: deleted superseded %s", *key, name)
            except ApiError as err:
                if err.status != 404:
                    raise
            job.setdefault("metadata", {})["deletionTimestamp"] = utc_now()

    async def _reconcile_serving(
        self, key: Key, body: dict[str, Any], me: ModelEngine, phase: str, plan: Plan
    ) -> None:
        """Deployment + Service + HPA for `spec.serving`, written only when they differ.

        Without `spec.serving` and nothing applied by this process, no request at all.
        Once verified, the rendered objects are remembered: later reconciles cost nothing,
        and a restarted operator reads them (GETs) but writes nothing when they match.
        """
        if me.spec.serving is None:
            if self._serving.pop(key, None) is not None:
                name = servingspec.serving_name(key[1])
                for kind in ("HorizontalPodAutoscaler", "Service", "Deployment"):
                    try:
                        await self.api.delete_object(kind, key[0], name)
                    except ApiError as err:
                        if err.status != 404:
                            self._serving[key] = ""  # retried: still ours to delete
                            raise
                log.info("%s/%s: serving removed", *key)
            return
        if phase != "Ready":
            return  # keep serving the previous release while a new one builds
        objects = servingspec.render(
            me=me,
            uid=(body.get("metadata") or {}).get("uid"),
            config=self.config,
            targets=[p.target for p in plan.targets],
        )
        fingerprint = json.dumps(objects, sort_keys=True)
        if self._serving.get(key) == fingerprint:
            return
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            existing = await self.api.read_object(kind, key[0], name)
            if existing is None:
                await self.api.create_object(kind, key[0], obj)
                log.info("%s/%s: created %s %s", *key, kind, name)
            elif servingspec.needs_update(existing, obj):
                await self.api.patch_object(
                    kind, key[0], name, {"metadata": obj["metadata"], "spec": obj["spec"]}
                )
                log.info("%s/%s: updated %s %s", *key, kind, name)
        self._serving[key] = fingerprint

    async def _ensure_finalizer(self, key: Key, body: dict[str, Any], me: ModelEngine) -> None:
        meta = body.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        want = me.spec.retention_policy is RetentionPolicy.DELETE
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self.api.patch_metadata(key[0], key[1], {"finalizers": new})
        meta["finalizers"] = new

    async def _finalize(self, key: Key, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        spec = body.get("spec") or {}
        if spec.get("retentionPolicy") == RetentionPolicy.DELETE.value:
            await self._delete_artifacts(key, body)
        new = [f for f in finalizers if f != FINALIZER]
        await self.api.patch_metadata(key[0], key[1], {"finalizers": new})
        meta["finalizers"] = new
        self._forget(key)

    async def _delete_artifacts(self, key: Key, body: dict[str, Any]) -> None:
        from modelengine.api.models import StorageSpec

        storage = StorageSpec.model_validate((body.get("spec") or {}).get("storage") or {})
        store = await self.stores.store_for(key[0], storage)
        others = {k for other, plan in self._plans.items() if other != key for k in plan}
        keys = {
            e.get("buildKey") for e in (body.get("status") or {}).get("engines") or [] if isinstance(e, dict)
        }

        def delete() -> None:
            for build_key in sorted(k for k in keys if k and k not in others):
                for obj in list(store.list(engine_prefix(build_key))):
                    if obj != manifest_key(build_key):
                        store.delete(obj)
                store.delete(manifest_key(build_key))  # last: a half-deleted engine is never "complete"
            store.delete(release_key(*key))

        await asyncio.to_thread(delete)
        self.post_event(
            body, "Normal", "EnginesDeleted", f"deleted {len(keys)} engine(s) and the release record"
        )

    async def _write_release(
        self, me: ModelEngine, generation: int | None, digest: str, plan: Plan, store: ObjectStore
    ) -> None:
        manifests = []
        for planned in plan.targets:
            manifest = await self._manifest(store, planned.build_key)
            if manifest is None:
                raise StoreError(f"manifest of {planned.build_key} disappeared from {store.uri}")
            manifests.append((planned, manifest))
        if not manifests:
            return
        record = make_release(
            store,
            namespace=me.metadata.namespace,
            name=me.metadata.name,
            generation=int(generation or 0),
            engines=[(p.target.name, m) for p, m in manifests],
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

    async def _fail_store(
        self,
        key: Key,
        body: dict[str, Any],
        generation: int | None,
        digest: str | None,
        current: dict[str, Any],
        message: str,
    ) -> NoReturn:
        """Report a store problem (no engines can be known) in status, then retry later."""
        desired = desired_status(
            engines=[],
            skipped=[],
            orphaned=[],
            generation=generation,
            model_digest=digest,
            current=current,
            error=message,
        )
        await self._write_status(key, body, desired)
        raise StoreError(message) from None

    async def _write_status(self, key: Key, body: dict[str, Any], desired: dict[str, Any]) -> None:
        current = body.get("status") or {}
        if not differs(current, desired):
            return
        loop = asyncio.get_running_loop()
        if (
            current.get("phase") == desired["phase"]
            and current.get("observedGeneration") == desired["observedGeneration"]
        ):
            # Progress only (one of several builds finished): batch it with what follows.
            due = self._last_write.get(key, 0.0) + self.config.status_interval_seconds
            if loop.time() < due:
                if key not in self._deferred:
                    self._deferred.add(key)
                    loop.call_later(due - loop.time(), self._undefer, key)
                return
        self._last_write[key] = loop.time()
        version = await self.api.patch_status(key[0], key[1], desired)
        written = {k: v for k, v in desired.items() if v is not None}
        # The cache may hold a newer dict by now (an event arrived during the request):
        # record what we wrote there too, unless that copy is already newer than our write.
        for copy in {id(b): b for b in (body, self.modelengines.get(key)) if b is not None}.values():
            if version is None or not _older({"metadata": {"resourceVersion": version}}, copy):
                copy["status"] = written
                if version is not None:
                    copy.setdefault("metadata", {})["resourceVersion"] = version
        old, new = current.get("phase"), desired["phase"]
        if old != new:
            self._announce(body, old, desired)

    def _undefer(self, key: Key) -> None:
        self._deferred.discard(key)
        self.enqueue(key)

    def _announce(self, body: dict[str, Any], old: str | None, status: dict[str, Any]) -> None:
        phase = status["phase"]
        conds = {c["type"]: c for c in status["conditions"]}
        if phase == "Ready":
            self.post_event(body, "Normal", "Ready", f"{status['targetsReady']} engines ready")
        elif phase == "Building":
            self.post_event(body, "Normal", "Building", conds["Building"]["message"][:1000])
        elif phase == "Failed":
            self.post_event(body, "Warning", conds["Failed"]["reason"], conds["Failed"]["message"][:1000])
        elif phase == "PartiallyReady":
            self.post_event(
                body,
                "Warning",
                "PartiallyReady",
                f"{status['targetsReady']} ready; {conds['Failed']['message']}"[:1000],
            )

    def _set_plan(self, key: Key, build_keys: set[str]) -> None:
        for old in self._plans.get(key, set()) - build_keys:
            users = self._key_users.get((key[0], old))
            if users is not None:
                users.discard(key)
                if not users:
                    del self._key_users[(key[0], old)]
        for new in build_keys:
            self._key_users.setdefault((key[0], new), set()).add(key)
        self._plans[key] = build_keys

    def _forget(self, key: Key) -> None:
        self._last_write.pop(key, None)
        self._serving.pop(key, None)  # owner references let the garbage collector delete them
        self._set_plan(key, set())
        self._plans.pop(key, None)
        self._queued.pop(key, None)
        self.limiter.done_waiting(key)
        self.metrics.queue_length.set(sum(self._queued.values()))

    def gpu_kinds(self) -> list[GpuKind]:
        return self.inventory.kinds()


def _ready(
    base: EngineStatus, manifest: EngineManifest, store: ObjectStore, *, job_name: str | None, cached: bool
) -> dict[str, Any]:
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
    ).to_wire()


def _termination_reason(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = ((status.get("state") or {}).get("terminated")) or (
            (status.get("lastState") or {}).get("terminated")
        )
        if not terminated:
            continue
        message = (terminated.get("message") or "").strip()
        if not message:
            continue
        try:
            summary = json.loads(message)
        except ValueError:
            return message.splitlines()[0][:500]
        if isinstance(summary, dict) and summary.get("reason"):
            return str(summary["reason"])[:1000]
    return None


def _older(new: Any, cached: dict[str, Any]) -> bool:
    """Whether `new` is an older version than `cached` (numeric resourceVersions only)."""
    a = str((new.get("metadata") or {}).get("resourceVersion") or "")
    b = str((cached.get("metadata") or {}).get("resourceVersion") or "")
    return a.isdigit() and b.isdigit() and int(a) < int(b)


def _key(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _plain(body: Any) -> dict[str, Any]:
    """A detached, mutable copy of a kopf body (kopf's bodies are live views)."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(body)))
    return copied


def event_ref(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    }
