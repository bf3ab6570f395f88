"""Lease-based leader election against KMock: acquire, respect, expire, take over, release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from modelengine.operator.kube_client import ClientApi
from modelengine.operator.leader import LeaseElector
from tests.operator.harness import FakeCluster


def test_only_one_holder_until_the_lease_expires(cluster: FakeCluster) -> None:
    api = ClientApi(kubeconfig=str(cluster.kubeconfig))
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    def elector(identity: str) -> LeaseElector:
        return LeaseElector(
            api=api,
            namespace="default",
            name="lead",
            identity=identity,
            duration_seconds=15,
            clock=lambda: now[0],
        )

    a, b = elector("a"), elector("b")

    async def scenario() -> None:
        assert await a.try_acquire_or_renew() is True
        assert await b.try_acquire_or_renew() is False
        now[0] += timedelta(seconds=10)
        assert await a.try_acquire_or_renew() is True  # renewed
        now[0] += timedelta(seconds=10)
        assert await b.try_acquire_or_renew() is False  # a renewed 10 s ago: not expired
        now[0] += timedelta(seconds=30)
        assert await b.try_acquire_or_renew() is True  # a stopped renewing: b takes over
        assert await a.try_acquire_or_renew() is False and not a.leading.is_set()
        await b.release()
        assert await a.try_acquire_or_renew() is True  # released: no need to wait for expiry

    try:
        asyncio.run(scenario())
        lease = cluster.get("leases", "default", "lead")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseTransitions"] == 2
    finally:
        api.close()
