"""Informer caches: what the watches told us, indexed the way reconcile asks for it.

kopf delivers every event of ModelEngines, builder Jobs and Nodes; the `observe_*`
methods here update in-memory copies and answer which ModelEngines the event concerns.
No I/O happens here, so reconcile reads everything from memory and steady state costs no
GETs. Cached objects are slimmed to what reconcile reads (no managedFields, no
last-applied annotation, a Job's status reduced to its conditions and counts): at 1,500
Jobs the full objects were most of the operator's memory.

The build-key index answers "which ModelEngines use this key": two ModelEngines sharing a
model and a target share one Job, and a finished Job must wake both.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelengine.operator.build_jobs import LABEL_KEY, LABEL_NAME
from modelengine.operator.nodes import NodeInventory
from modelengine.operator.workqueue import Key

log = logging.getLogger("modelengine.operator")

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_JOB_STATUS_FIELDS = ("conditions", "succeeded", "failed", "active")


class Informers:
    def __init__(self) -> None:
        self.modelengines: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.jobs_by_owner: dict[Key, set[Key]] = {}  # ModelEngine → its builder Jobs
        self.deployments: dict[Key, dict[str, Any]] = {}  # the serving groups' Deployments
        self.inventory = NodeInventory()
        self._key_users: dict[tuple[str, str], set[Key]] = {}  # (namespace, build key) → users
        self._plans: dict[Key, set[str]] = {}

    # ---- events ----

    def observe_modelengine(self, event_type: str | None, body: dict[str, Any]) -> bool:
        """Update the cache; True when the ModelEngine needs a reconcile."""
        key = key_of(body)
        if event_type == "DELETED":
            self.modelengines.pop(key, None)
            self.set_plan(key, set())
            self._plans.pop(key, None)
            return False
        cached = self.modelengines.get(key)
        if cached is not None and is_older(body, cached):
            return False  # a replayed, stale copy (e.g. a watch restart): our cache knows better
        self.modelengines[key] = slim(body)
        return True

    def observe_job(self, event_type: str | None, body: dict[str, Any]) -> tuple[Key, list[Key]] | None:
        """Update the cache; (the Job's key, the ModelEngines it concerns), None if no builder Job."""
        key = key_of(body)
        labels = (body.get("metadata") or {}).get("labels") or {}
        build_key = labels.get(LABEL_KEY)
        if build_key is None:
            return None
        owner = _owner(key[0], body)
        if event_type == "DELETED":
            self.jobs.pop(key, None)
            if owner is not None:
                self.jobs_by_owner.get(owner, set()).discard(key)
        else:
            self.jobs[key] = slim_job(body)
            if owner is not None:
                self.jobs_by_owner.setdefault(owner, set()).add(key)
        users = set(self._key_users.get((key[0], build_key), set()))
        owner = labels.get(LABEL_NAME)
        if owner and (key[0], owner) in self.modelengines:
            users.add((key[0], owner))
        return key, sorted(users)

    def observe_deployment(self, event_type: str | None, body: dict[str, Any]) -> list[Key]:
        """Update the cache; the ModelEngine that owns the Deployment (its rollout changed)."""
        key = key_of(body)
        if event_type == "DELETED":
            self.deployments.pop(key, None)
        else:
            cached = self.deployments.get(key)
            if cached is not None and is_older(body, cached):
                return []
            self.deployments[key] = slim(body)
        owners = (body.get("metadata") or {}).get("ownerReferences") or []
        return [(key[0], o["name"]) for o in owners if o.get("kind") == "ModelEngine" and o.get("name")]

    def observe_node(self, event_type: str | None, body: dict[str, Any]) -> list[Key]:
        """Update the GPU inventory; the ModelEngines whose targets depend on it, if it changed."""
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        if event_type == "DELETED":
            changed = self.inventory.remove(name)
        else:
            changed = self.inventory.update(name, meta.get("labels") or {})
        if not changed:
            return []
        log.info(
            "GPU kinds now: %s",
            ", ".join(f"{k.product} ({k.compute_capability})" for k in self.inventory.kinds()),
        )
        return [key for key, me in self.modelengines.items() if _depends_on_nodes(me)]

    # ---- the build-key index ----

    def set_plan(self, key: Key, build_keys: set[str]) -> None:
        for old in self._plans.get(key, set()) - build_keys:
            users = self._key_users.get((key[0], old))
            if users is not None:
                users.discard(key)
                if not users:
                    del self._key_users[(key[0], old)]
        for new in build_keys:
            self._key_users.setdefault((key[0], new), set()).add(key)
        self._plans[key] = build_keys

    def in_use(self, namespace: str, build_key: str) -> bool:
        return bool(self._key_users.get((namespace, build_key)))

    def keys_used_by_others(self, key: Key) -> set[str]:
        return {k for other, plan in self._plans.items() if other != key for k in plan}


def _owner(namespace: str, body: dict[str, Any]) -> Key | None:
    """The ModelEngine a Job belongs to (its controller owner reference)."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ModelEngine" and ref.get("name"):
            return (namespace, str(ref["name"]))
    return None


def _depends_on_nodes(me: dict[str, Any]) -> bool:
    """`auto`/product targets and serving groups both follow the cluster's GPU kinds."""
    spec = me.get("spec") or {}
    targets = spec.get("targets") or []
    return bool(spec.get("serving")) or any(
        isinstance(t, dict) and (t.get("auto") or t.get("product")) for t in targets
    )


def key_of(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def is_older(new: Any, cached: dict[str, Any]) -> bool:
    """Whether `new` is an older version than `cached` (numeric resourceVersions only)."""
    a = str((new.get("metadata") or {}).get("resourceVersion") or "")
    b = str((cached.get("metadata") or {}).get("resourceVersion") or "")
    return a.isdigit() and b.isdigit() and int(a) < int(b)


def slim(body: Any) -> dict[str, Any]:
    """A detached, mutable copy of a kopf body (kopf's bodies are live views), minus what
    reconcile never reads."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(body)))
    _slim_metadata(copied.get("metadata") or {})
    return copied


def _slim_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(_LAST_APPLIED, None)
    return meta


def slim_job(body: Any) -> dict[str, Any]:
    """A builder Job as reconcile reads it: identity, labels, owners, backoff, outcome.

    Only these parts are copied (not the pod template, not managedFields): Job events are
    most of the operator's events, and copying whole Jobs was a large share of its CPU.
    """
    meta = {
        k: v for k, v in (body.get("metadata") or {}).items() if k not in ("managedFields", "annotations")
    }
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    kept = {k: status[k] for k in _JOB_STATUS_FIELDS if k in status}
    copied: dict[str, Any] = json.loads(json.dumps({"metadata": meta, "status": kept}))
    copied["spec"] = {"backoffLimit": spec["backoffLimit"]} if "backoffLimit" in spec else {}
    return copied
