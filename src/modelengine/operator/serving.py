"""Serving reconcile: apply `spec.serving`'s objects, written only when they differ.

`serving_objects` renders the Deployment, Service and HPA; this module makes the
cluster hold them. Without `spec.serving` and nothing applied by this process, it makes no
request at all. Once the objects are verified to match, their rendering is remembered, so
later reconciles cost nothing, and a restarted operator reads them (GETs) but writes
nothing when they match (compared after the server's defaulting, see
`serving_objects.needs_update`). While a new release builds, the previous one keeps
serving: objects are applied only when the ModelEngine is Ready.
"""

from __future__ import annotations

import json
import logging

from modelengine.api.models import ModelEngine, Phase
from modelengine.operator.config import OperatorConfig
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.plan import Plan
from modelengine.operator.serving_objects import needs_update, render, serving_name
from modelengine.operator.workqueue import Key

log = logging.getLogger("modelengine.operator")

_KINDS_DELETE_ORDER = ("HorizontalPodAutoscaler", "Service", "Deployment")


class ServingSync:
    def __init__(self, *, api: KubeApi, config: OperatorConfig) -> None:
        self._api = api
        self._config = config
        self._applied: dict[Key, str] = {}  # rendered objects known to match the cluster

    async def reconcile(self, key: Key, me: ModelEngine, uid: str | None, phase: Phase, plan: Plan) -> None:
        if me.spec.serving is None:
            await self._remove(key)
            return
        if phase is not Phase.READY:
            return  # keep serving the previous release while a new one builds
        objects = render(me=me, uid=uid, config=self._config, targets=[p.target for p in plan.targets])
        fingerprint = json.dumps(objects, sort_keys=True)
        if self._applied.get(key) == fingerprint:
            return
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            existing = await self._api.read_object(kind, key[0], name)
            if existing is None:
                await self._api.create_object(kind, key[0], obj)
                log.info("%s/%s: created %s %s", *key, kind, name)
            elif needs_update(existing, obj):
                await self._api.patch_object(
                    kind, key[0], name, {"metadata": obj["metadata"], "spec": obj["spec"]}
                )
                log.info("%s/%s: updated %s %s", *key, kind, name)
        self._applied[key] = fingerprint

    async def _remove(self, key: Key) -> None:
        if self._applied.pop(key, None) is None:
            return
        name = serving_name(key[1])
        for kind in _KINDS_DELETE_ORDER:
            try:
                await self._api.delete_object(kind, key[0], name)
            except ApiError as err:
                if err.status != 404:
                    self._applied[key] = ""  # retried: still ours to delete
                    raise
        log.info("%s/%s: serving removed", *key)

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)  # owner references let the garbage collector delete them
