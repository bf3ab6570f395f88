"""Serving reconcile: make the cluster hold each serving group, and report its rollout.

`serving_groups` decides which groups exist (one per GPU kind with a loadable engine,
CPU on request) and `serving_objects` renders them; this module applies them, deletes the
groups that no longer exist (a GPU kind left the cluster, `spec.serving` was removed) and
reads each group's rollout from the Deployment the informers watch:

    RolledOut    every replica runs the current template and is available
    Progressing  a rollout is under way (new engine, new pods, scaling)
    Stalled      the Deployment passed its progress deadline: its new pods never turned
                 ready (e.g. the engine failed acceptance on that GPU kind); the old
                 pods keep serving because rollouts never remove a ready pod first

Writes happen only when the rendering differs from what this process last applied; a
restarted operator reads the objects (GETs) and writes nothing when they already match
after the server's defaulting (`serving_objects.needs_update`). While a new release
builds, the previous one keeps serving: objects are applied only when the ModelEngine
is Ready.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelengine.api.models import ModelEngine, Phase, RolloutPhase, ServingGroupStatus
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.serving_groups import GroupPlan, ServingGroup
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

    def statuses(self, key: Key, me: ModelEngine, plan: GroupPlan) -> list[ServingGroupStatus]:
        """Each group's rollout as the watched Deployments show it, plus the kinds not served."""
        out: list[ServingGroupStatus] = []
        for group in plan.groups:
            dep = self._cache.deployments.get((key[0], group_name(me.metadata.name, group)))
            phase, reason, replicas, ready = rollout_of(dep)
            out.append(_status(me, group, phase, reason, replicas, ready))
        for group, why in plan.blocked:
            out.append(_status(me, group, RolloutPhase.VERSION_MISMATCH, why, None, None))
        for kind in plan.without_engine:
            out.append(
                ServingGroupStatus(
                    group=kind.product,
                    phase=RolloutPhase.NO_ENGINE,
                    product=kind.product,
                    compute_capability=kind.compute_capability,
                    reason=f"no engine for {kind.product} ({kind.compute_capability}): no pods there",
                )
            )
        return out

    async def reconcile(
        self, key: Key, me: ModelEngine, uid: str | None, phase: Phase, plan: GroupPlan
    ) -> None:
        if me.spec.serving is None:
            await self._remove(key, me, keep=set())
            return
        if phase is not Phase.READY:
            return  # keep serving the previous release while a new one builds
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


def _owned_by(dep: dict[str, Any], name: str) -> bool:
    owners = (dep.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == "ModelEngine" and o.get("name") == name for o in owners)


def _status(
    me: ModelEngine,
    group: ServingGroup,
    phase: RolloutPhase,
    reason: str | None,
    replicas: int | None,
    ready: int | None,
) -> ServingGroupStatus:
    return ServingGroupStatus(
        group=group.slug,
        phase=phase,
        product=group.kind.product if group.kind else None,
        compute_capability=group.kind.compute_capability if group.kind else None,
        deployment=group_name(me.metadata.name, group),
        engine=group.target.name,
        replicas=replicas,
        ready_replicas=ready,
        reason=reason,
    )


def rollout_of(dep: dict[str, Any] | None) -> tuple[RolloutPhase, str | None, int | None, int | None]:
    """(phase, reason, replicas, ready replicas) of a group's Deployment as last watched."""
    if dep is None:
        return RolloutPhase.PROGRESSING, "creating the Deployment", None, None
    status = dep.get("status") or {}
    replicas, ready = int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return (
            RolloutPhase.STALLED,
            progressing.get("message") or "progress deadline exceeded",
            replicas,
            ready,
        )
    generation = (dep.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return RolloutPhase.PROGRESSING, "the new template is not observed yet", replicas, ready
    wanted = int((dep.get("spec") or {}).get("replicas") or 1)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated >= wanted and available >= wanted and replicas == updated:
        return RolloutPhase.ROLLED_OUT, None, replicas, ready
    return RolloutPhase.PROGRESSING, f"{available}/{wanted} available, {updated} updated", replicas, ready
