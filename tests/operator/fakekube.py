"""KMock, made a little more like a real API server for the operator's tests.

KMock's `KubernetesEmulator` keeps objects in memory and serves list/watch/create/patch/
delete over real HTTP, so kopf and the `kubernetes` client run against it unmodified. What
it leaves out, and the operator depends on, is filled in here, in one subclass, through
the hooks KMock offers (`_handle`, `__call__`, the list fallback) rather than a new server:

- `GET /api/v1/namespaces` fails in KMock's path parser (a namespace list has no name
  part); it is answered here from the namespaces the stored objects live in.
- Object metadata a real server maintains: `uid`, `resourceVersion` (bumped on every
  write), `creationTimestamp`, and `generation`, which starts at 1 and is bumped only when
  `spec` changes (status and metadata writes leave it alone).
- The status subresource: a PATCH to `.../status` changes only `status`; a PATCH to the
  main resource of a kind that has the subresource cannot change `status`.
- `labelSelector` on lists (equality and existence terms), so label-filtered reads see
  what a real server would return; `limit` + `continue` pages, in key order.
- Validation a real v1.36 server does before storing (tests/operator/apiserver_rules.py):
  names, label keys and values, the strict OpenAPI schema of the built-in kinds the
  operator writes, the Job status condition order; a refused write answers `422 Invalid`
  with a Status body like the real one and stores nothing.
- What a real server stores (tests/operator/apiserver_defaults.py): empty lists and maps
  dropped, the built-in kinds' defaults filled, Jobs' generated selector and `job-name`
  labels, new Nodes tainted `node.kubernetes.io/not-ready` as the node controller does.
- Connections: `connections` maps each TCP/TLS connection the server accepted (numbered
  by the harness's server) to the User-Agent of its first request, so a test can count
  how many connections a client opened.

Fault injection (409 / 500 / slow answers) needs nothing new: KMock's DSL does it, e.g.
`server['post /apis/batch/v1/namespaces/default/jobs'][:2] << 500`.

Scale: KMock decides which reaction answers a request by replaying its filters over every
request it has seen, so each request costs O(requests so far). For the scale benchmark
(tens of thousands of requests) `history_limit` keeps only the latest requests in KMock's
own history; `log` keeps all of them for counting. Slice-based injections (`[:2]`) count
within that window, so tests that inject leave the limit off.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import itertools
import json
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import dicts, enums, rendering

from tests.operator import apiserver_defaults, apiserver_rules

# Kinds whose `status` is a subresource on a real server (plural names).
STATUS_SUBRESOURCE_PLURALS = frozenset(
    {
        "modelengines",
        "jobs",
        "pods",
        "deployments",
        "services",
        "nodes",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    }
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _manager(request: rendering.Request) -> str:
    """A field manager's name, as a real server derives it from the User-Agent."""
    agent = str((request.headers or {}).get("User-Agent") or "unknown")
    return agent.split("/", 1)[0] or "unknown"


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality (`a=b`, `a==b`, `a!=b`) and existence (`a`, `!a`) terms, comma-joined."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class ConnectionLog:
    """Connections the server accepted, numbered, with the User-Agent each one first sent."""

    def __init__(self) -> None:
        self.opened = 0
        self._serials: dict[Any, int] = {}
        self.agents: dict[int, str] = {}

    def accepted(self, handler: Any) -> None:
        self.opened += 1
        self._serials[handler] = self.opened

    def closed(self, handler: Any) -> None:
        self._serials.pop(handler, None)

    def request(self, handler: Any, user_agent: str) -> None:
        serial = self._serials.get(handler)
        if serial is not None and serial not in self.agents:
            self.agents[serial] = user_agent

    def opened_by(self, agents: tuple[str, ...], *, since: int = 0) -> int:
        """Connections (numbered above `since`) whose first request came from one of `agents`."""
        return sum(1 for serial, agent in self.agents.items() if serial > since and agent.startswith(agents))


NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """KMock's Kubernetes emulator with server-maintained metadata and subresources."""

    history_limit: int | None = None
    log: list[rendering.Request] = attrs.field(factory=list, init=False)
    connections: ConnectionLog = attrs.field(factory=ConnectionLog, init=False)
    _rv: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _cluster_ips: Any = attrs.field(factory=lambda: itertools.count(10), init=False)

    def _next_rv(self) -> str:
        return str(next(self._rv))

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self.connections.request(raw_request.protocol, raw_request.headers.get("User-Agent", ""))
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
            await raw_request.read()
            self._requests.append(
                rendering.Request(method="GET", url=raw_request.url, id=len(self._requests))
            )
            self.log.append(self._requests[-1])
            if raw_request.query.get("watch") in ("true", "1"):
                return await self._hold_watch(raw_request)
            return aiohttp.web.json_response(self._namespace_list())
        try:
            return await super().__call__(raw_request)
        finally:
            if self.history_limit is not None and len(self._requests) > 2 * self.history_limit:
                del self._requests[: -self.history_limit]

    def _namespace_list(self) -> dict[str, Any]:
        names = {"default"}
        for resource, namespace, name in list(self.objects):
            if namespace:
                names.add(namespace)
            if resource.plural == "namespaces" and resource.group == "":
                names.add(name)
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "resourceVersion": "1"}}
            for n in sorted(names)
        ]
        return {
            "apiVersion": "v1",
            "kind": "NamespaceList",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    async def _hold_watch(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Namespaces never change in these tests: an open, silent watch is the honest answer.
        response = aiohttp.web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(raw_request)
        timeout = float(raw_request.query.get("timeoutSeconds", "60"))
        await asyncio.sleep(timeout)
        await response.write_eof()
        return response

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self.log.append(request)  # once per request, as it arrives (watches end much later)
        causes: list[apiserver_rules.Cause] = []
        if request.resource is not None and isinstance(request.data, (dict, list)):
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                causes = self._stamp_create(request)
            elif request.action == enums.action.UPDATE and request.name is not None:
                causes = self._stamp_update(request)
        if causes:
            return self._refuse(request, causes)
        return await super()._handle(request)

    def _type_of(self, resource: Any) -> tuple[str, str]:
        """(apiVersion, kind) of a resource, as a real server writes them into every object."""
        kind = self.resources[resource].kind if resource in self.resources else resource.plural
        api_version = f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
        return api_version, str(kind)

    def _refuse(
        self, request: rendering.Request, causes: list[apiserver_rules.Cause]
    ) -> aiohttp.web.Response:
        assert request.resource is not None
        api_version, kind = self._type_of(request.resource)
        data = request.data if isinstance(request.data, dict) else {}
        name = request.name or str((data.get("metadata") or {}).get("name") or "")
        body = apiserver_rules.invalid_status(
            kind=str(kind), api_version=api_version, name=name, causes=causes
        )
        return aiohttp.web.json_response(body, status=422)

    def _stored(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        serial = next(self._cluster_ips) if plural == "services" else 0
        ip = f"10.96.{serial // 250}.{serial % 250 + 2}"
        return apiserver_defaults.stored_form(plural, obj, cluster_ip=ip)

    def _stamp_create(self, request: rendering.Request) -> list[apiserver_rules.Cause]:
        assert request.resource is not None
        plural = str(request.resource.plural)
        api_version, kind = self._type_of(request.resource)
        request.data["apiVersion"], request.data["kind"] = api_version, request.data.get("kind") or kind
        meta = request.data.setdefault("metadata", {})
        meta.setdefault("namespace", request.namespace) if request.namespace else None
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = _now()
        meta.setdefault("generation", 1)
        if meta.get("generateName") and not meta.get("name"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if plural == "nodes" and request.resource.group == "":
            spec = request.data.setdefault("spec", {})
            spec["taints"] = [*(spec.get("taints") or []), dict(NOT_READY_TAINT)]
        stored = self._stored(plural, request.data)
        causes = apiserver_rules.object_causes(plural, stored) + apiserver_rules.schema_causes(plural, stored)
        if causes:
            return causes
        stored.setdefault("metadata", {})["managedFields"] = apiserver_defaults.managed_fields(
            None, manager=_manager(request), obj=stored, subresource=None, now=meta["creationTimestamp"]
        )
        if stored is not request.data:
            request.data.clear()
            request.data.update(stored)
        return []

    def _stamp_update(self, request: rendering.Request) -> list[apiserver_rules.Cause]:
        assert request.resource is not None
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return []  # KMock answers 404 itself
        current = copy.deepcopy(self.objects[key].raw)
        patch = request.data
        plural = str(request.resource.plural)
        if isinstance(patch, list):  # JSON patch: turn the outcome into a merge patch
            merged = dict(dicts.patch_dict(current, patch))
            patch = {k: merged.get(k) for k in set(current) | set(merged)}
        if request.subresource == "status":
            patch = {"status": patch.get("status")}
        elif plural in STATUS_SUBRESOURCE_PLURALS:
            patch = {k: v for k, v in patch.items() if k != "status"}
        patch_meta = dict(patch.get("metadata") or {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace"):
            patch_meta.pop(fixed, None)
        merged = dict(dicts.patch_dict(current, {**patch, "metadata": patch_meta}))
        merged = self._stored(plural, merged) if plural in apiserver_defaults.TYPED_PLURALS else merged
        causes = apiserver_rules.object_causes(plural, merged) + apiserver_rules.schema_causes(plural, merged)
        if plural == "jobs" and request.subresource == "status":
            causes += apiserver_rules.job_status_causes(merged.get("status") or {})
        if causes:
            return causes
        meta = merged.setdefault("metadata", {})
        meta["resourceVersion"] = self._next_rv()
        meta["managedFields"] = apiserver_defaults.managed_fields(
            (current.get("metadata") or {}).get("managedFields"),
            manager=_manager(request),
            obj={"apiVersion": merged.get("apiVersion", ""), **patch},
            subresource=request.subresource,
            now=_now(),
        )
        generation = int(current.get("metadata", {}).get("generation") or 1)
        if json.dumps(merged.get("spec"), sort_keys=True) != json.dumps(current.get("spec"), sort_keys=True):
            generation += 1
        meta["generation"] = generation
        patch = apiserver_defaults.merge_patch_to(current, merged)
        if isinstance(request.data, list):
            object.__setattr__(request, "data", patch)
        else:
            request.data.clear()
            request.data.update(patch)
        return []

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector") if request.params else None
        assert isinstance(listing, dict)
        if selector:
            listing["items"] = [
                item
                for item in listing["items"]
                if selector_matches(selector, item.get("metadata", {}).get("labels") or {})
            ]
        listing["metadata"] = {"resourceVersion": str(next(self._rv))}
        limit = int(request.params.get("limit") or 0) if request.params else 0
        if limit > 0:  # pages in key order, as etcd returns them; `continue` = the last key given
            items = sorted(listing["items"], key=_store_key)
            after = request.params.get("continue") or ""
            if after:
                items = [i for i in items if _store_key(i) > tuple(json.loads(base64.b64decode(after)))]
            listing["items"] = items[:limit]
            if len(items) > limit:
                token = json.dumps(list(_store_key(items[limit - 1]))).encode()
                listing["metadata"]["continue"] = base64.b64encode(token).decode()
                listing["metadata"]["remainingItemCount"] = len(items) - limit
        return listing
