"""Serving reconcile: make the cluster hold each serving group, and nothing more.

`serving_groups` decides which groups exist (one per GPU kind with a loadable engine,
CPU on request) and `serving_objects` renders them; this module applies them and deletes
the groups that no longer exist (a GPU kind left the cluster, `spec.serving` was
removed); `rollouts` reports how each group's rollout goes.

Writes happen only when the rendering differs from what this process last applied; a
restarted operator reads the objects (Deployments from the watch cache, the rest by GET)
and writes nothing when they already match after the server's defaulting
(`serving_objects.needs_update`). While a new release builds, the previous one keeps
serving: objects are applied only once every target is final, the phases the release
record is published in: `Ready`, or `PartiallyReady` (the kinds whose build failed get no
group, exactly as kinds without an engine, and `status.serving[]` gives the build's reason).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelengine.api.models import BackendName, EnginePhase, EngineStatus, ModelEngine, Phase
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.errors import first_line
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.metrics import Metrics
from modelengine.operator.release_record import RELEASED_PHASES
from modelengine.operator.serving_groups import GroupPlan, plan_groups
from modelengine.operator.serving_objects import group_name, needs_update, render, serving_name
from modelengine.operator.workqueue import Key

log = logging.getLogger("modelengine.operator")

_GROUP_KINDS = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment")


class ServingSync:
    def __init__(self, *, api: KubeApi, config: OperatorConfig, cache: Informers) -> None:
        self._api = api
        self._config = config
        self._cache = cache
        self._applied: dict[Key, str] = {}  # rendered objects known to match the cluster

    def plan(
        self, me: ModelEngine, engines: list[EngineStatus], kinds: list[GpuKind], metrics: Metrics
    ) -> GroupPlan | None:
        """Which serving groups the Ready engines and the cluster's GPU kinds call for."""
        if me.spec.serving is None:
            return None
        released = [
            (_target_of(e), e.backend_version)
            for e in engines
            if e.phase is EnginePhase.READY and e.backend_version
        ]
        failed = [
            (target, _failure(e))
            for e in engines
            if e.phase is EnginePhase.FAILED and (target := _known_target(e)) is not None
        ]
        plan = plan_groups(
            me.spec.serving,
            kinds=kinds,
            released=released,
            runtime_versions={b: self._config.runtime_backend_version(b) for b in BackendName},
            failed=failed,
        )
        labels = {"namespace": me.metadata.namespace, "modelengine": me.metadata.name}
        metrics.kinds_without_engine.labels(**labels).set(len(plan.without_engine))
        return plan

    async def reconcile(
        self, key: Key, me: ModelEngine, uid: str | None, phase: Phase, plan: GroupPlan, *, hold: bool = False
    ) -> None:
        """`hold`: the release was held back (a partial update would drop a served kind)."""
        if me.spec.serving is None:
            await self._remove(key, me, keep=set())
            return
        if phase not in RELEASED_PHASES or hold:
            return  # keep serving the previous release while a new one builds, or is held
        objects = render(me=me, uid=uid, config=self._config, groups=plan.groups)
        fingerprint = json.dumps(objects, sort_keys=True)
        if self._applied.get(key) == fingerprint:
            return
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            existing = (
                self._cache.deployments.get((key[0], name))
                if kind == "Deployment"
                else await self._api.read_object(kind, key[0], name)
            )
            if existing is None:
                try:
                    await self._api.create_object(kind, key[0], obj)
                except ApiError as err:
                    if err.status != 409:
                        raise
                    existing = await self._api.read_object(kind, key[0], name)
                else:
                    log.info("%s/%s: created %s %s", *key, kind, name)
                    continue
            if existing is not None and needs_update(existing, obj):
                await self._api.patch_object(
                    kind, key[0], name, {"metadata": obj["metadata"], "spec": obj["spec"]}
                )
                log.info("%s/%s: updated %s %s", *key, kind, name)
        await self._remove(key, me, keep={group_name(me.metadata.name, g) for g in plan.groups})
        self._applied[key] = fingerprint

    async def _remove(self, key: Key, me: ModelEngine, *, keep: set[str]) -> None:
        """Delete the groups (and, with none left, the Service) this ModelEngine no longer has."""
        stale = [
            name
            for (namespace, name), dep in self._cache.deployments.items()
            if namespace == key[0] and name not in keep and _owned_by(dep, me.metadata.name)
        ]
        for name in stale:
            for kind in _GROUP_KINDS:
                await self._delete(kind, key[0], name)
            self._cache.deployments.pop((key[0], name), None)
            log.info("%s/%s: serving group %s removed", *key, name)
        if not keep and self._applied.pop(key, None) is not None:
            await self._delete("Service", key[0], serving_name(me.metadata.name))
            log.info("%s/%s: serving removed", *key)

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._api.delete_object(kind, namespace, name)
        except ApiError as err:
            if err.status != 404:
                raise

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)  # owner references let the garbage collector delete them


def _target_of(engine: EngineStatus) -> ResolvedTarget:
    return ResolvedTarget(BackendName(engine.backend), engine.compute_capability, engine.product)


def _known_target(engine: EngineStatus) -> ResolvedTarget | None:
    try:
        return _target_of(engine)
    except ValueError:  # a backend this operator does not know: nothing to match a kind with
        return None


def _failure(engine: EngineStatus) -> str:
    """A failed engine's reason, one line, without the `target: ` prefix builders may add."""
    reason = first_line(engine.reason or "build failed")
    prefix = f"{engine.target}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def _owned_by(dep: dict[str, Any], name: str) -> bool:
    owners = (dep.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == "ModelEngine" and o.get("name") == name for o in owners)
