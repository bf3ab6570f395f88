"""Builder Jobs as a resource: slots, creation (adopting on 409), supersession.

The limiter decides whether a target may start now; a target that may not is Queued and
its ModelEngine is woken when a slot frees. Creating a Job is idempotent: the name derives
from the build key, so a second create answers 409 and the existing Job is adopted.
Jobs of a ModelEngine that no current plan uses any more (the spec changed) are deleted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelengine.api.targets import ResolvedTarget
from modelengine.errors import first_line, utc_now
from modelengine.logs import redact
from modelengine.operator.build_jobs import LABEL_KEY, LABEL_TARGET, job_failure_reason, job_state
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.limiter import BuildLimiter
from modelengine.operator.metrics import Metrics
from modelengine.operator.workqueue import Key

log = logging.getLogger("modelengine.operator")


class Builds:
    def __init__(self, *, api: KubeApi, cache: Informers, limiter: BuildLimiter, metrics: Metrics) -> None:
        self._api = api
        self._cache = cache
        self.limiter = limiter
        self._metrics = metrics
        self._queued: dict[Key, int] = {}  # ModelEngine → targets waiting for a slot
        self._failures: dict[Key, str] = {}  # failed Job → the builder's reason

    def observe(self, event_type: str | None, job_key: Key) -> bool:
        """Account a Job event against the slots; True when a slot was freed."""
        job = self._cache.jobs.get(job_key)
        if event_type == "DELETED" or job is None:
            freed = self.limiter.set_finished(job_key[1])
        elif job_state(job) == "Running":
            labels = (job.get("metadata") or {}).get("labels") or {}
            self.limiter.set_running(job_key[1], labels.get(LABEL_TARGET, "unknown"))
            freed = False
        else:
            freed = self.limiter.set_finished(job_key[1])
        self._metrics.jobs_in_flight.set(self.limiter.running())
        return freed or event_type == "DELETED"

    def may_start(self, target: ResolvedTarget) -> bool:
        return self.limiter.can_start(target.name)

    def record_queued(self, key: Key, queued: int) -> None:
        if queued:
            self._queued[key] = queued
            self.limiter.wait(key)
        else:
            self._queued.pop(key, None)
            self.limiter.done_waiting(key)
        self._metrics.queue_length.set(sum(self._queued.values()))

    def forget(self, key: Key) -> None:
        self.record_queued(key, 0)

    async def start(self, key: Key, job: dict[str, Any], *, kind: str) -> None:
        """Create the Job (or adopt the one that exists); it counts as running from now.

        `kind` is the slot it takes: a target's name, or `resolve`.
        """
        name = job["metadata"]["name"]
        # Seen as running until the watch delivers the real object: no second create.
        self._cache.jobs[(key[0], name)] = {"metadata": job["metadata"], "spec": {}, "status": {}}
        try:
            await self._api.create_job(key[0], job)
            self._metrics.builds_started.labels(target=kind).inc()
            log.info("%s/%s: started %s for %s", *key, name, kind)
        except ApiError as err:
            if err.status != 409:
                self._cache.jobs.pop((key[0], name), None)
                raise
            log.info("%s/%s: adopting existing %s", *key, name)
        self.limiter.set_running(name, kind)
        self._metrics.jobs_in_flight.set(self.limiter.running())

    async def failure_reason(self, namespace: str, job: dict[str, Any]) -> str:
        """The builder's own one-line reason (its termination message), else Kubernetes'."""
        name = job["metadata"]["name"]
        cached = self._failures.get((namespace, name))
        if cached is not None:
            return cached
        reason = None
        try:
            pods = await self._api.job_pods(namespace, name)
        except ApiError as err:
            log.warning("cannot read the Pods of %s/%s: %s", namespace, name, err)
            pods = []
        for pod in sorted(
            pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True
        ):
            reason = termination_reason(pod)
            if reason:
                break
        reason = redact(reason or job_failure_reason(job))
        self._failures[(namespace, name)] = reason
        return reason

    async def supersede(self, key: Key) -> None:
        """Delete this ModelEngine's Jobs whose keys no current plan uses any more.

        Only the ModelEngine's own Jobs are looked at (the informers index them by owner):
        at 1,500 Jobs a walk over all of them per reconcile was a third of the CPU.
        """
        for job_key in sorted(self._cache.jobs_by_owner.get(key, set())):
            job = self._cache.jobs.get(job_key)
            if job is None:
                continue
            meta = job.get("metadata") or {}
            labels = meta.get("labels") or {}
            if meta.get("deletionTimestamp") or labels.get(LABEL_TARGET) == "resolve":
                continue  # resolve Jobs are shared by every ModelEngine of a model: their TTL ends them
            if self._cache.in_use(job_key[0], labels.get(LABEL_KEY, "")):
                continue
            try:
                await self._api.delete_job(*job_key)
                log.info("%s/%s: deleted superseded %s", *key, job_key[1])
            except ApiError as err:
                if err.status != 404:
                    raise
            meta["deletionTimestamp"] = utc_now()


def termination_reason(pod: dict[str, Any]) -> str | None:
    """The builder's one-line reason from its termination message (JSON summary or text)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = ((status.get("state") or {}).get("terminated")) or (
            (status.get("lastState") or {}).get("terminated")
        )
        if not terminated:
            continue
        # Written by the builder image, so untrusted: kubelet caps it at 4 KiB, and 4 KiB of
        # "[" nests deeper than json's recursion limit.
        message = str(terminated.get("message") or "")[:4096].strip()
        if not message:
            continue
        try:
            summary = json.loads(message)
        except (ValueError, RecursionError):
            return first_line(message, limit=500)
        if isinstance(summary, dict) and summary.get("reason"):
            return first_line(str(summary["reason"]), limit=1000)
    return None
