"""Writing status: one merge patch when it differs, progress batched, an Event per transition.

The desired status is computed whole by `status.desired_status`; this module decides
whether and when to send it. Nothing is written when it equals what the object has (a
restart or a re-apply costs no writes). A change that is progress only (same phase, same
generation: one of several builds finished) is held until `interval` has passed since the
last write, then written with whatever else changed by then. A phase change posts one
Event (source `kopf`, as kopf posts them) with the reason and message a user reads in
`kubectl describe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modelengine.api.models import Condition, ModelEngineStatus, Phase
from modelengine.operator.informers import is_older
from modelengine.operator.kube import KubeApi
from modelengine.operator.status import differs, status_patch
from modelengine.operator.workqueue import Key

EventPoster = Callable[[dict[str, Any], str, str, str], None]  # (body, type, reason, message)
_MAX_EVENT = 1000


class StatusWriter:
    def __init__(
        self,
        *,
        api: KubeApi,
        interval: float,
        requeue: Callable[[float, Key], None],
        post_event: EventPoster,
    ) -> None:
        self._api = api
        self._interval = interval
        self._requeue = requeue
        self.post_event = post_event
        self._last_write: dict[Key, float] = {}
        self._deferred: set[Key] = set()

    async def write(
        self, key: Key, body: dict[str, Any], desired: ModelEngineStatus, *, cached: dict[str, Any] | None
    ) -> None:
        """Patch `desired` onto the object unless it already has it; `cached` is the cache's copy."""
        current = body.get("status") or {}
        if not differs(current, desired):
            self._deferred.discard(key)
            return
        loop = asyncio.get_running_loop()
        if (
            current.get("phase") == desired.phase.value
            and current.get("observedGeneration") == desired.observed_generation
        ):
            due = self._last_write.get(key, 0.0) + self._interval
            if loop.time() < due:
                if key not in self._deferred:
                    self._deferred.add(key)
                    self._requeue(due - loop.time(), key)
                return
        self._deferred.discard(key)
        self._last_write[key] = loop.time()
        version = await self._api.patch_status(key[0], key[1], status_patch(current, desired))
        written = desired.to_wire()
        # The cache may hold a newer dict by now (an event arrived during the request):
        # record what we wrote there too, unless that copy is already newer than our write.
        for copy in {id(b): b for b in (body, cached) if b is not None}.values():
            if version is None or not is_older({"metadata": {"resourceVersion": version}}, copy):
                copy["status"] = written
                if version is not None:
                    copy.setdefault("metadata", {})["resourceVersion"] = version
        old = current.get("phase")
        if old != desired.phase.value:
            self._announce(body, desired)

    def forget(self, key: Key) -> None:
        self._last_write.pop(key, None)
        self._deferred.discard(key)

    def _announce(self, body: dict[str, Any], status: ModelEngineStatus) -> None:
        conds: dict[str, Condition] = {c.type: c for c in status.conditions}
        phase = status.phase
        if phase is Phase.READY:
            self.post_event(body, "Normal", "Ready", f"{status.targets_ready} engines ready")
        elif phase is Phase.BUILDING:
            self.post_event(body, "Normal", "Building", conds["Building"].message[:_MAX_EVENT])
        elif phase is Phase.FAILED:
            failed = conds["Failed"]
            self.post_event(body, "Warning", failed.reason, failed.message[:_MAX_EVENT])
        elif phase is Phase.PARTIALLY_READY:
            message = f"{status.targets_ready} ready; {conds['Failed'].message}"
            self.post_event(body, "Warning", "PartiallyReady", message[:_MAX_EVENT])
