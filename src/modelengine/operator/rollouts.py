"""Rollout tracking: each serving group's state, read from the Deployments the informers watch.

    RolledOut    every replica runs the current template and is available
    Progressing  a rollout is under way (new engine, new pods, scaling)
    Stalled      the Deployment passed its progress deadline: its new pods never turned
                 ready (e.g. the engine failed acceptance on that GPU kind); the old
                 pods keep serving because rollouts never remove a ready pod first

For a stalled group the reason is the runtime's own: the not-ready pod's
`/v2/health/ready` line (e.g. `engine failed acceptance: golden sample max ...`), read
once per stall through the API server's pod proxy; the Deployment controller's message
otherwise. A group newly stalled, or newly held back by the version gate, gets a Warning
Event naming its GPU kind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from modelengine.api.models import ModelEngine, ModelEngineStatus, RolloutPhase, ServingGroupStatus
from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.serving_groups import GroupPlan, ServingGroup
from modelengine.operator.serving_objects import HTTP_PORT, group_name

log = logging.getLogger("modelengine.operator")
EventPoster = Callable[[dict[str, Any], str, str, str], None]
_MAX_REASON = 1000


class Rollouts:
    def __init__(self, *, api: KubeApi, cache: Informers) -> None:
        self._api = api
        self._cache = cache
        self._reasons: dict[tuple[str, str, Any], str | None] = {}  # (ns, deployment, generation) → why

    async def statuses(
        self, key: tuple[str, str], me: ModelEngine, plan: GroupPlan
    ) -> list[ServingGroupStatus]:
        """Each group's rollout as the watched Deployments show it, plus the kinds not served.

        For a stalled group the reason is the runtime's own: the not-ready pod's
        `/v2/health/ready` line (e.g. `engine failed acceptance: ...`), read once per stall
        through the API server's pod proxy; the Deployment controller's message otherwise.
        """
        out: list[ServingGroupStatus] = []
        for group in plan.groups:
            dep = self._cache.deployments.get((key[0], group_name(me.metadata.name, group)))
            phase, reason, replicas, ready = rollout_of(dep)
            if phase is RolloutPhase.STALLED and dep is not None:
                reason = await self._runtime_reason(key[0], me, group, dep) or reason
            out.append(_status(me, group, phase, reason, replicas, ready))
        for group, why in plan.blocked:
            out.append(_status(me, group, RolloutPhase.VERSION_MISMATCH, why, None, None))
        for kind in plan.without_engine:
            reason = f"no engine for {kind.product} ({kind.compute_capability}): no pods there"
            if kind in plan.build_failures:
                target, why = plan.build_failures[kind]
                reason = f"{reason}; the build of {target} failed: {why}"[:_MAX_REASON]
            out.append(
                ServingGroupStatus(
                    group=kind.product,
                    phase=RolloutPhase.NO_ENGINE,
                    product=kind.product,
                    compute_capability=kind.compute_capability,
                    reason=reason,
                )
            )
        return out

    async def _runtime_reason(
        self, namespace: str, me: ModelEngine, group: ServingGroup, dep: dict[str, Any]
    ) -> str | None:
        stall = (
            namespace,
            group_name(me.metadata.name, group),
            (dep.get("metadata") or {}).get("generation"),
        )
        if stall in self._reasons:
            return self._reasons[stall]
        selector = ",".join(f"{k}={v}" for k, v in _selector_of(dep).items())
        reason = None
        try:
            pods = await self._api.list_pods(namespace, selector)
            waiting = sorted(
                (p for p in pods if not _pod_ready(p)),
                key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "",
                reverse=True,
            )
            if waiting:
                name = waiting[0]["metadata"]["name"]
                status, body = await self._api.pod_proxy_get(namespace, name, HTTP_PORT, "/v2/health/ready")
                reason = _ready_reason(body) if status != 200 else None
        except ApiError as err:
            log.info("%s: cannot read the runtime's reason: %s", stall[1], err)
        self._reasons[stall] = reason
        return reason

    @staticmethod
    def announce(
        post_event: EventPoster, body: dict[str, Any], current: ModelEngineStatus, desired: ModelEngineStatus
    ) -> None:
        """A Warning Event when a group newly stalls or is newly held back by the version gate."""
        before = {g.group: g.phase for g in current.serving or []}
        for group in desired.serving or []:
            if (
                group.phase in (RolloutPhase.STALLED, RolloutPhase.VERSION_MISMATCH)
                and before.get(group.group) != group.phase
            ):
                reason = "RolloutStalled" if group.phase is RolloutPhase.STALLED else "VersionMismatch"
                post_event(body, "Warning", reason, f"{group.product or group.group}: {group.reason}"[:1000])


def _selector_of(dep: dict[str, Any]) -> dict[str, str]:
    return dict(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _ready_reason(body: bytes) -> str | None:
    """The runtime's one-line not-ready reason from its `/v2/health/ready` body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    reason = doc.get("reason") or doc.get("error") if isinstance(doc, dict) else None
    return redact(first_line(str(reason)))[:500] if reason else None


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
