"""KMock, made a little more like a real API server for the operator's tests.

KMock's `KubernetesEmulator` keeps objects in memory and serves list/watch/create/patch/
delete over real HTTP, so kopf and the `kubernetes` client run against it unmodified. What
it leaves out, and the operator depends on, is filled in here, in one subclass, through
the hooks KMock offers (`_handle`, `__call__`, the list fallback) rather than a new server:

- `GET /api/v1/namespaces` fails in KMock's path parser (a namespace list has no name
  part); it is answered here from the namespaces the stored objects live in.
- Object metadata a real server maintains: `uid`, `resourceVersion`, `creationTimestamp`,
  and `generation`, which starts at 1 and is bumped only when `spec` changes (status and
  metadata writes leave it alone). `resourceVersion` is one counter for the whole store,
  taken when a write is committed (as KMock puts its event on the bus, under its lock), so
  versions grow in the order watches see the writes; every write takes a new one, the
  DELETED of an object and the `deletionTimestamp` a DELETE sets on an object with
  finalizers included, and the stored object (the write's answer, later reads) carries it.
- Optimistic concurrency: a PATCH/PUT whose `metadata.resourceVersion` is not the stored
  one answers 409 Conflict with a real server's message and writes nothing (checked before
  KMock takes its lock: two writes to one object racing inside that gap both pass).
- The status subresource: a PATCH to `.../status` changes only `status`; a PATCH to the
  main resource of a kind that has the subresource cannot change `status`.
- `labelSelector` on lists (equality and existence terms), so label-filtered reads see
  what a real server would return; `limit` + `continue` pages, in key order. A list's
  `metadata.resourceVersion` is the store's version its snapshot was read at (in the same
  critical section), and later pages carry the first page's, so a watch from it has no gap.
- WATCH (KMock replays every object as ADDED on every watch and ignores its parameters):
  `resourceVersion` unset, "" or "0" replays the current objects as ADDED, then streams;
  `resourceVersion=N` replays nothing and sends exactly the events after N, from a watch
  cache of the last `watch_history` events per resource and then live (the mark on KMock's
  bus and the cache are read under KMock's lock, so nothing falls between or comes twice);
  an N the cache no longer reaches answers one `ERROR` event, `410 Expired` ("too old
  resource version: N (M)"), and ends the stream. `labelSelector` filters events, and a
  MODIFIED object that stops (starts) matching is sent as DELETED (ADDED). The namespace of
  the URL and a name in the path scope events. `timeoutSeconds` ends the stream cleanly
  after that long (unset: open until the client goes). `allowWatchBookmarks` adds a
  BOOKMARK every `bookmark_interval` seconds and one right before a timeout ends the stream,
  at the store's version when nothing of the resource is still to be sent to that watcher.
  Not served: `sendInitialEvents`, `fieldSelector`, a "too large resource version" wait.
- Boolean query parameters read as a real server reads them: anything but `false`/`0` is
  true, so `watch=True` (the `kubernetes` client's spelling) or `watch=1` is a watch (KMock
  itself takes only `watch=true`; the request is handed to it with that spelling).
- Validation a real v1.36 server does before storing (tests/operator/apiserver_rules.py):
  names, label keys and values, the strict OpenAPI schema of the built-in kinds the
  operator writes, the Job status condition order; a refused write answers `422 Invalid`
  with a Status body like the real one and stores nothing.
- What a real server stores (tests/operator/apiserver_defaults.py): empty lists and maps
  dropped, the built-in kinds' defaults filled, Jobs' generated selector and `job-name`
  labels, new Nodes tainted `node.kubernetes.io/not-ready` as the node controller does.
- Authorization, as a real server's RBAC authorizer does it (tests/operator/rbac.py): a
  request whose `Authorization: Bearer` token is one of `users` (token → user name, e.g.
  `system:serviceaccount:NS:SA`) is decided by `authorizer`'s Roles, ClusterRoles and
  bindings (e.g. a rendered chart's) before anything else reads it: lists, watches,
  writes, subresources and the pod proxy alike. A denied request answers `403 Forbidden`
  with the real Status body and message, stores and streams nothing, and is kept in
  `denied` (not in `log`). Requests without a registered token (the tests' own clients)
  stay admin, as if made with the cluster's admin credentials.
- Connections: `connections` maps each TCP/TLS connection the server accepted (numbered
  by the harness's server) to the User-Agent of its first request, so a test can count
  how many connections a client opened.

Fault injection: `refuse_next(method, path, status)` refuses a write the way a real server
does (a Status body, nothing stored, nothing streamed). KMock's DSL (e.g.
`server['post /apis/batch/v1/namespaces/default/jobs'][:2] << 500`) answers *after* KMock
stored the write and streamed it to watchers: right for a 5xx or a timeout whose write
landed anyway, wrong for a 4xx refusal.

Scale: a create, read, patch or delete finds its object by key (KMock scans every stored
object of every kind per request, so a client facing a fuller server looked slower than
it was; a real server reads one key). KMock decides which reaction answers a request by
replaying its filters over every request it has seen, so each request costs O(requests so
far). For the scale benchmark (tens of thousands of requests) `history_limit` keeps only
the latest requests in KMock's own history; `log` keeps all of them for counting.
Slice-based injections (`[:2]`) count within that window, so tests that inject leave the
limit off.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import datetime
import itertools
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import aiohttp.web
import attrs
import kmock
from kmock._internal import aiobus, dicts, enums, k8s_dicts, references, rendering
from kmock._internal.k8s import KubernetesObjectNotFoundError, KubernetesResourceNotFoundError

from tests.operator import apiserver_defaults, apiserver_rules, rbac

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


def query_flag(value: str | None) -> bool:
    """A boolean query parameter as a real server reads it (apimachinery's
    `Convert_Slice_string_To_bool`): absent is false, "0" and "false" in any case are false,
    anything else (`true`, `True`, `1`, even empty) is true."""
    if value is None:
        return False
    return not (value == "0" or value.lower() == "false")


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


@attrs.frozen
class WatchEvent:
    """One committed write of one resource, as the watch cache holds it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    namespace: str | None
    name: str
    object: dict[str, Any]
    old_labels: dict[str, str] | None  # MODIFIED: the labels before this write, where known


@attrs.define(kw_only=True, eq=False)
class WatchBus(aiobus.Bus[Any]):
    """KMock's per-resource event bus, plus a real server's watch cache.

    KMock puts every write's event on its resource's bus while holding the emulator's lock.
    Here each put is committed first (`commit` stamps a fresh resourceVersion and turns the
    raw event into a `WatchEvent`), appended to `history` (at most `limit()` events: older
    ones are dropped and `expired_rv` remembers the newest dropped one), then streamed.
    A watcher that takes its mark and reads `history` under that same lock therefore gets
    every event exactly once: those up to its mark from the history, the rest live.
    """

    commit: Callable[[dict[str, Any]], WatchEvent]
    limit: Callable[[], int]
    history: collections.deque[WatchEvent] = attrs.field(factory=collections.deque)
    expired_rv: int = 0  # resuming from an older version than this one answers 410
    latest_rv: int = 0  # the version of the newest event put on this bus

    async def put(self, *items: Any) -> None:
        events = [self.commit(item) for item in items]
        for event in events:
            self.history.append(event)
            self.latest_rv = event.rv
        while len(self.history) > max(self.limit(), 0):
            self.expired_rv = self.history.popleft().rv
        await super().put(*events)


class _Buses(dict[references.resource, aiobus.Bus[Any]]):
    """KMock's `defaultdict(Bus)`, with a `WatchBus` that knows its resource."""

    def __init__(self, make: Callable[[references.resource], WatchBus]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, resource: references.resource) -> aiobus.Bus[Any]:
        bus = self[resource] = self._make(resource)
        return bus


async def _next_event(stream: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await anext(stream)


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


_STATUS_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid"}


@attrs.define
class Refusal:
    """A write the server refuses `times` more times (`KubeEmulator.refuse_next`)."""

    method: str
    path: str
    status: int
    times: int
    message: str


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """KMock's Kubernetes emulator with server-maintained metadata and subresources."""

    history_limit: int | None = None
    watch_history: int = 10000  # events kept per resource for watches resuming from a version
    bookmark_interval: float = 1.0  # seconds between BOOKMARKs on watches that allow them
    refusals: list[Refusal] = attrs.field(factory=list, init=False)  # see `refuse_next`
    log: list[rendering.Request] = attrs.field(factory=list, init=False)
    users: dict[str, str] = attrs.field(factory=dict)  # bearer token → user name (authorized by RBAC)
    authorizer: rbac.Authorizer = attrs.field(factory=rbac.Authorizer)
    denied: list[rbac.Attributes] = attrs.field(factory=list, init=False)  # requests answered 403
    connections: ConnectionLog = attrs.field(factory=ConnectionLog, init=False)
    _rv: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last_rv: int = attrs.field(default=0, init=False)
    _cluster_ips: Any = attrs.field(factory=lambda: itertools.count(10), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = _Buses(self._new_bus)
        self._next_rv()  # an empty store is at version 1: no list ever answers "0" ("any")

    def _next_rv(self) -> str:
        """A new resourceVersion: the write that takes it is committed at it right away (under
        KMock's lock, or synchronously on its loop), so the latest one is the store's version."""
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _new_bus(self, resource: references.resource) -> WatchBus:
        return WatchBus(commit=lambda event: self._commit(resource, event), limit=lambda: self.watch_history)

    def _commit(self, resource: references.resource, event: dict[str, Any]) -> WatchEvent:
        """Stamp a write's event (called under KMock's lock as it puts the event on the bus):
        a new resourceVersion for every write, DELETED included, as a real server's; the stored
        object takes it too, so the write's answer and later reads agree with the event."""
        rv = int(self._next_rv())
        raw = dict(event.get("object") or {})
        meta = {**(raw.get("metadata") or {}), "resourceVersion": str(rv)}
        raw["metadata"] = meta
        namespace, name = meta.get("namespace") or None, str(meta.get("name") or "")
        old_labels: dict[str, str] | None = None
        key = (resource, namespace, name)
        if key in self.objects:
            stored = self.objects[key]
            history = stored.history
            if event.get("type") == "MODIFIED" and len(history) >= 2 and history[-2] is not None:
                old_labels = _labels(history[-2].raw)
            stored.last["metadata"] = dict(meta)  # its own copy: the event's never changes
        return WatchEvent(
            rv=rv,
            type=str(event.get("type")),
            namespace=namespace,
            name=name,
            object=raw,
            old_labels=old_labels,
        )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self.connections.request(raw_request.protocol, raw_request.headers.get("User-Agent", ""))
        forbidden = await self._authorize(raw_request)
        if forbidden is not None:
            return forbidden
        watch = raw_request.query.get("watch")
        if watch is not None and watch != "true" and query_flag(watch):
            # KMock's parser takes only `watch=true` for a watch; a real server takes `True`
            # (what the `kubernetes` client sends), `1`, ...: hand KMock the spelling it reads.
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
            await raw_request.read()
            self._requests.append(
                rendering.Request(method="GET", url=raw_request.url, id=len(self._requests))
            )
            self.log.append(self._requests[-1])
            if query_flag(raw_request.query.get("watch")):
                return await self._hold_watch(raw_request)
            return aiohttp.web.json_response(self._namespace_list())
        try:
            return await super().__call__(raw_request)
        finally:
            if self.history_limit is not None and len(self._requests) > 2 * self.history_limit:
                del self._requests[: -self.history_limit]

    async def _authorize(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.Response | None:
        """A `403` for a request of a known user that RBAC does not allow; None to serve it.

        Decided from the raw request, as a real server's filters do before any handler: the
        watch, the namespace list answered here and the pod proxy (a KMock reaction, see
        `FakeCluster.route_pod_proxy`) are all behind it, and a denied write stores nothing."""
        scheme, _, token = (raw_request.headers.get("Authorization") or "").partition(" ")
        name = self.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if name is None:
            return None  # no token the server knows: the tests' own (admin) clients
        attributes = rbac.request_attributes(
            rbac.user_named(name), raw_request.method, raw_request.path, raw_request.query
        )
        decision = self.authorizer.authorize(attributes)
        if decision.allowed:
            return None
        await raw_request.read()
        self.denied.append(attributes)
        return aiohttp.web.json_response(rbac.forbidden_status(attributes, decision.reason), status=403)

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
        refused = self._refusal(request)
        if refused is not None:
            return refused
        causes: list[apiserver_rules.Cause] = []
        if request.resource is not None and isinstance(request.data, (dict, list)):
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                causes = self._stamp_create(request)
            elif request.action == enums.action.UPDATE and request.name is not None:
                stale = self._stale_precondition(request)
                if stale is not None:
                    return stale
                causes = self._stamp_update(request)
        if causes:
            return self._refuse(request, causes)
        return await super()._handle(request)

    def refuse_next(self, method: str, path: str, status: int, *, times: int = 1, message: str = "") -> None:
        """Answer the next `times` `method` requests to `path` with `status` and write nothing.

        KMock's own injections (`kmock[...] << 422`) answer after KMock has stored the write
        and streamed it to watchers; a real server that refuses a write stores nothing."""
        self.refusals.append(Refusal(method.upper(), path, status, times, message))

    def _refusal(self, request: rendering.Request) -> aiohttp.web.Response | None:
        method = str(getattr(request.method, "value", request.method)).upper()
        for refusal in self.refusals:
            if refusal.times > 0 and refusal.method == method and refusal.path == request.url.path:
                refusal.times -= 1
                reason = _STATUS_REASONS.get(refusal.status, "BadRequest")
                message = refusal.message or f"refused by the test ({refusal.status} {reason})"
                body = apiserver_rules.failure_status(refusal.status, reason, message)
                return aiohttp.web.json_response(body, status=refusal.status)
        return None

    def _stale_precondition(self, request: rendering.Request) -> aiohttp.web.Response | None:
        """A write carrying `metadata.resourceVersion` other than the stored one: 409 Conflict,
        nothing written (optimistic concurrency: how a Lease or a Secret has one winner)."""
        assert request.resource is not None
        data = request.data if isinstance(request.data, dict) else {}
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        key: Any = (request.resource, request.namespace, request.name)
        if not wanted or key not in self.objects or self.objects[key].deleted:
            return None
        if str(wanted) == str((self.objects[key].raw.get("metadata") or {}).get("resourceVersion")):
            return None
        group = request.resource.group
        what = f"{request.resource.plural}.{group}" if group else str(request.resource.plural)
        message = (
            f'Operation cannot be fulfilled on {what} "{request.name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        details = {"name": request.name, "group": group, "kind": str(request.resource.plural)}
        body = apiserver_rules.failure_status(409, "Conflict", message, details)
        return aiohttp.web.json_response(body, status=409)

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
        meta.pop("resourceVersion", None)  # given when the write is committed (`_commit`)
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
        meta = merged.setdefault("metadata", {})  # its resourceVersion: given at commit (`_commit`)
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

    # KMock answers a create, read, patch or delete by scanning every stored object of every
    # kind for the one the request names, so each request costs O(all objects) and a client
    # facing a fuller server looks slower than it is. A real server reads one key; so do these.

    def _named(self, request: rendering.Request) -> k8s_dicts.Object | None:
        """The stored object a request names (a create names it in its body), or None."""
        namespace, name = request.namespace, request.name
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.get("metadata") or {}
            namespace, name = namespace or meta.get("namespace"), name or meta.get("name")
        key: Any = (request.resource, namespace, name)
        return self.objects[key] if key in self.objects else None  # noqa: SIM401 - ObjectsArray has no get()

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            obj = self._named(request)
        if obj is None or obj.deleted:
            raise KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            obj = self._named(request)
        assert obj is not None  # stored by KMock's `_handle` before any answer is rendered
        return obj.raw

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            obj = self._named(request)
        assert obj is not None
        return obj.last.raw

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            obj = self._named(request)
        assert obj is not None
        return obj.last.raw

    def _current(self, request: rendering.Request, selector: str) -> list[dict[str, Any]]:
        """The stored objects a list or watch `request` covers (call it holding the lock)."""
        return [
            obj.raw
            for (resource, namespace, name), obj in self.objects.items()
            if resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
            and not obj.deleted
            and (not selector or selector_matches(selector, _labels(obj.raw)))
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise KubernetesResourceNotFoundError()
        params = request.params or {}
        selector = params.get("labelSelector") or ""
        after: tuple[str, str] | None = None
        async with self._lock:  # the snapshot and its version, as one read (a watch from it has no gap)
            items = self._current(request, selector)
            version = self._last_rv
        if params.get("continue"):  # a later page: the first page's version, as a real server's
            first, namespace, name = json.loads(base64.b64decode(params["continue"]))
            version, after = int(first), (str(namespace), str(name))
        api_version, kind = self._type_of(request.resource)
        listing: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(version)},
            "items": items,
        }
        limit = int(params.get("limit") or 0)
        if limit > 0:  # pages in key order, as etcd returns them; `continue` = the last key given
            items = sorted(items, key=_store_key)
            if after is not None:
                items = [i for i in items if _store_key(i) > after]
            listing["items"] = items[:limit]
            if len(items) > limit:
                token = json.dumps([version, *_store_key(items[limit - 1])]).encode()
                listing["metadata"]["continue"] = base64.b64encode(token).decode()
                listing["metadata"]["remainingItemCount"] = len(items) - limit
        return listing

    # ---- WATCH, as a real server's watch cache serves it ----

    def _bookmark(self, resource: references.resource, rv: int) -> dict[str, Any]:
        api_version, kind = self._type_of(resource)
        return {
            "type": "BOOKMARK",
            "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(rv)}},
        }

    @staticmethod
    def _watch_error(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"type": "ERROR", "object": apiserver_rules.failure_status(code, reason, message)}

    @staticmethod
    def _seen_as(request: rendering.Request, event: WatchEvent, selector: str) -> dict[str, Any] | None:
        """What a watcher with this scope and label selector is sent for `event`, if anything.

        With a selector, a MODIFIED object that stops matching is DELETED for the watcher
        (carrying its new state), one that starts matching is ADDED, as a real server does."""
        if request.namespace is not None and event.namespace != request.namespace:
            return None
        if request.name is not None and event.name != request.name:
            return None
        kind = event.type
        if selector:
            now = selector_matches(selector, _labels(event.object))
            before = now
            if kind == "MODIFIED" and event.old_labels is not None:
                before = selector_matches(selector, event.old_labels)
            if not now and not before:
                return None
            if kind == "MODIFIED" and now != before:
                kind = "ADDED" if now else "DELETED"
        return {"type": kind, "object": event.object}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """A watch as a real server's watch cache serves it (the module docstring lists how)."""
        yield b""  # the headers go out now, before any event, as a real server sends them
        assert request.resource is not None
        resource = request.resource
        params = request.params or {}
        selector = params.get("labelSelector") or ""
        since = params.get("resourceVersion") or ""
        timeout = float(params.get("timeoutSeconds") or 0)  # 0 or unset: until the client leaves
        bookmarks = query_flag(params.get("allowWatchBookmarks"))
        bus = self._buses[resource]
        assert isinstance(bus, WatchBus)

        initial: list[dict[str, Any]] = []
        failure: dict[str, Any] | None = None
        async with self._lock:  # the mark and the history (or the snapshot) as one read
            if since in ("", "0"):  # from now: every current object as ADDED, then what follows
                seen = self._last_rv
                initial = [{"type": "ADDED", "object": obj} for obj in self._current(request, selector)]
            elif not since.isdigit():
                seen = 0
                failure = self._watch_error(400, "BadRequest", f"invalid resource version: {since!r}")
            elif int(since) < bus.expired_rv:
                seen = 0
                message = f"too old resource version: {since} ({bus.expired_rv})"
                failure = self._watch_error(410, "Expired", message)
            else:  # from `since`: no replay, only the events after it, from the history then live
                seen = max(int(since), bus.latest_rv)
                for event in bus.history:
                    if event.rv > int(since) and (view := self._seen_as(request, event, selector)):
                        initial.append(view)
            mark = await bus.mark() if failure is None else None
        if failure is not None or mark is None:
            yield failure
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        stream = bus.stream(since=mark)
        getter: asyncio.Task[WatchEvent] | None = None

        def bookmark() -> dict[str, Any]:
            # Nothing of this resource waits to be sent: the store's version is safe to resume
            # from; otherwise only the version of the last event this watcher was given.
            return self._bookmark(resource, max(seen, self._last_rv) if bus.latest_rv <= seen else seen)

        try:
            for view in initial:
                yield view
            del initial
            while True:
                if getter is None:
                    getter = asyncio.create_task(_next_event(stream))
                if getter.done():
                    event = getter.result()
                    getter = None
                    seen = max(seen, event.rv)
                    if (view := self._seen_as(request, event, selector)) is not None:
                        yield view
                    continue
                now = loop.time()
                if deadline is not None and now >= deadline:
                    if bookmarks:
                        yield bookmark()  # a last resume point, right before the stream ends
                    return  # the server's timeout: the stream ends cleanly
                if next_bookmark is not None and now >= next_bookmark:
                    next_bookmark = now + self.bookmark_interval
                    yield bookmark()
                    continue
                wakes = [t for t in (deadline, next_bookmark) if t is not None]
                await asyncio.wait({getter}, timeout=max(0.0, min(wakes) - now) if wakes else None)
        finally:
            if getter is not None:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await getter
            with contextlib.suppress(Exception):
                await cast(AsyncGenerator[WatchEvent, None], stream).aclose()
            await bus.unmark(mark)
