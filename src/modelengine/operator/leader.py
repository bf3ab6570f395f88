"""Leader election with a coordination.k8s.io Lease: one active replica, the others warm.

Every replica runs kopf's watches (so its caches are warm), but only the Lease holder's
workers reconcile, and reconciling is the only thing that writes. The holder renews the
Lease every `renew_seconds`; a replica takes it over only once `renewTime +
leaseDurationSeconds` has passed, and every write to the Lease carries the
resourceVersion it read, so two replicas racing for an expired Lease cannot both win
(the loser gets 409). A stopping leader releases the Lease so that failover is immediate.

kopf's own peering needs distinct priorities to pick one replica (equal priorities pause
everyone), which identical Deployment replicas do not have; a Lease does not care.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelengine.operator.kube import ApiError

log = logging.getLogger("modelengine.operator.leader")


class LeaseApi(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseElector:
    def __init__(
        self,
        *,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: int = 15,
        renew_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration_seconds
        self.renew = renew_seconds
        self.clock = clock
        self.leading = asyncio.Event()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.try_acquire_or_renew()
                except ApiError as err:
                    log.warning("lease %s/%s: %s", self.namespace, self.name, err)
                    self._set(False)
                await asyncio.sleep(self.renew)
        finally:
            if self.leading.is_set():
                await self.release()

    def _set(self, leading: bool) -> None:
        if leading and not self.leading.is_set():
            log.warning(
                "became the leader (lease %s/%s held by %s)", self.namespace, self.name, self.identity
            )
            self.leading.set()
        elif not leading and self.leading.is_set():
            log.warning("lost the leadership (lease %s/%s)", self.namespace, self.name)
            self.leading.clear()

    async def try_acquire_or_renew(self) -> bool:
        now = self.clock()
        lease = await self.api.read_lease(self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, transitions=0, acquired=now),
            }
            try:
                await self.api.create_lease(self.namespace, body)
            except ApiError as err:
                if err.status != 409:
                    raise
                self._set(False)
                return False
            self._set(True)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration)
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            self._set(False)
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = now if holder != self.identity else (_parse(spec.get("acquireTime")) or now)
        patch = {
            "metadata": {"resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")},
            "spec": self._spec(now, transitions=transitions, acquired=acquired),
        }
        try:
            await self.api.patch_lease(self.namespace, self.name, patch)
        except ApiError as err:
            if err.status != 409:
                raise
            self._set(False)
            return False
        self._set(True)
        return True

    async def release(self) -> None:
        try:
            lease = await self.api.read_lease(self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self.api.patch_lease(
                    self.namespace,
                    self.name,
                    {
                        "metadata": {"resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")},
                        "spec": {"holderIdentity": "", "renewTime": None},
                    },
                )
        except ApiError as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, err)
        self.leading.clear()

    def _spec(self, now: datetime, *, transitions: int, acquired: datetime) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }
