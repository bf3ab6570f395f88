"""Priming the caches before the first reconcile: one LIST per kind of object.

Workers must know the GPU kinds and the serving Deployments before they plan anything:
otherwise `auto` would plan for no kinds, and a restarted operator would re-create
Deployments it has not seen yet (409s, writes on a restart that should make none). One
list each, not a GET per object; kopf's watches keep them current. Builder Jobs are
listed by their own informer (`job_watch`), which the controller awaits first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from modelengine.operator.build_jobs import LABEL_MANAGED, MANAGED_BY
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.serving_objects import COMPONENT, LABEL_COMPONENT

log = logging.getLogger("modelengine.operator")

Observe = Callable[[str | None, dict[str, Any]], object]
Lister = Callable[[str | None, str], Awaitable[list[dict[str, Any]]]]


async def prime(
    *,
    api: KubeApi,
    namespaces: list[str],
    on_node: Observe,
    on_deployment: Observe,
    retry_seconds: float,
) -> None:
    """List Nodes and serving Deployments into the caches; retried until it works."""
    while True:
        try:
            for node in await api.list_nodes():
                on_node("ADDED", node)
            selector = f"{LABEL_MANAGED}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT}"
            for deployment in await _list(api.list_deployments, namespaces, selector):
                on_deployment("ADDED", deployment)
            return
        except ApiError as err:
            log.warning("cannot list Nodes and Deployments yet (retrying): %s", err)
            await asyncio.sleep(retry_seconds)


async def _list(lister: Lister, namespaces: list[str], selector: str) -> list[dict[str, Any]]:
    if not namespaces:
        return await lister(None, selector)
    out: list[dict[str, Any]] = []
    for namespace in namespaces:
        out.extend(await lister(namespace, selector))
    return out
