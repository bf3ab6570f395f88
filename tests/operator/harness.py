"""Test harness: KMock in a thread, the operator in a thread, a kubeconfig between them.

Each part runs on its own event loop in its own thread, as separate processes would, and
they only talk over HTTPS, as with a real cluster: KMock is served by aiohttp's test
server (KMock's own `Server`, given a server class that adds TLS and counts accepted
connections) with a throwaway CA made at test time (tests/operator/tls.py), and the
operator (kopf + the `kubernetes` client) reads the server URL and that CA from a
kubeconfig. Tests drive the cluster with the `kubernetes` client too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiohttp.test_utils
import aiohttp.web_server
import kmock
import yaml
import yarl

from modelengine.operator.config import OperatorConfig
from modelengine.operator.controller import Controller
from modelengine.operator.kube_client import ClientApi
from modelengine.operator.leader import LeaseElector
from modelengine.operator.run import connection_info, operate
from modelengine.operator.storage import StoreProvider
from modelengine.operator.webhook import WebhookService
from tests.operator import rbac
from tests.operator.fakekube import ConnectionLog, KubeEmulator
from tests.operator.tls import ServerCertificate, make_certificate

T = TypeVar("T")

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "modelengine.io/v1alpha1/modelengines": kmock.ResourceInfo(
        kind="ModelEngine",
        singular="modelengine",
        namespaced=True,
        shortnames={"me"},
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "batch/v1/jobs": kmock.ResourceInfo(
        kind="Job",
        singular="job",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/pods": kmock.ResourceInfo(
        kind="Pod",
        singular="pod",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/nodes": kmock.ResourceInfo(
        kind="Node",
        singular="node",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/secrets": kmock.ResourceInfo(
        kind="Secret",
        singular="secret",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/events": kmock.ResourceInfo(
        kind="Event",
        singular="event",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs={"get", "list", "watch"},
    ),
    "coordination.k8s.io/v1/leases": kmock.ResourceInfo(
        kind="Lease",
        singular="lease",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    # spec.serving's objects
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        singular="deployment",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service",
        singular="service",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler",
        singular="horizontalpodautoscaler",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget",
        singular="poddisruptionbudget",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    # The injection webhook's configuration (its caBundle is kept in sync by the operator).
    "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": kmock.ResourceInfo(
        kind="MutatingWebhookConfiguration",
        singular="mutatingwebhookconfiguration",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(
        kind="KopfPeering",
        singular="kopfpeering",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
}


class LoopThread:
    """An event loop running in a daemon thread; `call` runs a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _CountingServer(aiohttp.web_server.Server):
    """aiohttp's low-level server, telling a `ConnectionLog` of each connection."""

    connection_log: ConnectionLog

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self.connection_log.accepted(handler)
        super().connection_made(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self.connection_log.closed(handler)
        super().connection_lost(handler, exc)


class ApiTestServer(aiohttp.test_utils.RawTestServer):
    """The server class KMock's `Server` runs the emulator in: TLS on, connections counted."""

    def __init__(
        self, handler: Any, *, ssl_context: Any, connection_log: ConnectionLog, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._ssl_context = ssl_context
        self._connection_log = connection_log

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        await super().start_server(loop, ssl=self._ssl_context, **kwargs)

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> Any:
        server = _CountingServer(self._handler, loop=self._loop, debug=debug, **kwargs)
        server.connection_log = self._connection_log
        return aiohttp.web.ServerRunner(server, debug=debug, **kwargs)


class FakeCluster:
    """KMock (with `KubeEmulator`'s additions) serving the Kubernetes API over HTTPS on loopback."""

    def __init__(self, tmp: Path, *, history_limit: int | None = None) -> None:
        self.history_limit = history_limit
        self.tmp = tmp
        self.certificate: ServerCertificate = make_certificate("127.0.0.1")
        self.runner = LoopThread("kmock")
        self.kmock: KubeEmulator
        self._server: kmock.Server
        self.url = self.runner.call(self._start())
        self.kubeconfig = self._write_kubeconfig(tmp / "kubeconfig", "test-token")
        self._users = 0

    def _write_kubeconfig(self, path: Path, token: str) -> Path:
        ca_data = base64.b64encode(self.certificate.ca_pem).decode()
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "kmock",
                            "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                        }
                    ],
                    "users": [{"name": "test", "user": {"token": token}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                    "current-context": "kmock",
                }
            )
        )
        return path

    def load_rbac(self, objects: Iterable[dict[str, Any]]) -> None:
        """Add the Roles, ClusterRoles and bindings among `objects` (e.g. every document of a
        rendered chart; other kinds are skipped) to what the fake authorizes users by."""
        docs = list(objects)

        async def load() -> None:
            self.kmock.authorizer.load(docs)

        self.runner.call(load())

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig with a bearer token the fake knows as `user` (e.g.
        `rbac.service_account(NS, NAME)`): its requests are allowed only as far as the RBAC
        objects loaded (`load_rbac`) grant, where `kubeconfig`'s are admin."""
        self._users += 1
        token = f"token-{self._users}-{uuid.uuid4().hex}"

        async def register() -> None:
            self.kmock.users[token] = user

        self.runner.call(register())
        return self._write_kubeconfig(self.tmp / f"kubeconfig-{self._users}", token)

    def chart_kubeconfig(self, docs: list[dict[str, Any]]) -> Path:
        """Load a rendered chart's RBAC (`helm template` documents) and return a kubeconfig of
        the ServiceAccount its operator Deployment runs as: the operator's requests are then
        allowed exactly as far as the chart's Roles and bindings grant."""
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        self.load_rbac(docs)
        return self.kubeconfig_for(rbac.service_account(deployment["metadata"]["namespace"], account))

    async def _start(self) -> str:
        self.kmock = KubeEmulator(history_limit=self.history_limit)
        for name, info in RESOURCES.items():
            self.kmock.resources[name] = info
        await self.kmock.__aenter__()
        server_context = self.certificate.server_context(self.tmp)
        client_context = self.certificate.client_context()

        def server_class(handler: Any, **kwargs: Any) -> ApiTestServer:
            return ApiTestServer(
                handler, ssl_context=server_context, connection_log=self.kmock.connections, **kwargs
            )

        def client(url: yarl.URL) -> aiohttp.ClientSession:  # KMock's own client (benchmark writes)
            return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=client_context))

        self._server = kmock.Server(self.kmock, server_cls=server_class, client_fct=client)  # type: ignore[arg-type]
        await self._server.__aenter__()
        return str(self._server.url).rstrip("/")

    @property
    def connections(self) -> ConnectionLog:
        """TCP/TLS connections the server accepted (and whose first request came from whom)."""
        return self.kmock.connections

    async def _stop(self) -> None:
        await self._server.__aexit__(None, None, None)
        await self.kmock.__aexit__(None, None, None)

    def close(self) -> None:
        try:
            self.runner.call(self._stop(), timeout=10)
        finally:
            self.runner.close()

    def inject(self, fn: Callable[[KubeEmulator], Any]) -> None:
        """Apply a KMock DSL statement on KMock's own loop (e.g. fault injection)."""

        async def apply() -> None:
            fn(self.kmock)

        self.runner.call(apply())

    def route_pod_proxy(self, proxy: Callable[[str, str, int, str], tuple[int, bytes]]) -> None:
        """Serve `GET /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH` as a real API server
        does: forwarded to the pod (here: `proxy`, the test node's way to reach its pods).
        A known user needs `get` of `pods/proxy` there (`KubeEmulator` checks it first)."""
        pattern = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/:]+):(\d+)/proxy/(.*)$")

        from kmock import Response  # type: ignore[attr-defined]  # public, not in __all__

        async def forward(request: Any) -> Any:
            match = pattern.match(request.url.path)
            assert match is not None
            namespace, pod, port, path = match.groups()
            status, body = await asyncio.to_thread(proxy, namespace, pod, int(port), path)
            return Response(status=status, payload=body, headers={"Content-Type": "application/json"})

        self.inject(lambda k: k[pattern] << forward)

    # ---- object helpers (the in-memory state, as kubectl would show it) ----

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            out = []
            for (resource, ns, _name), obj in list(self.kmock.objects.items()):
                if resource.plural == plural and (namespace is None or ns == namespace) and not obj.deleted:
                    out.append(json.loads(json.dumps(obj.raw)))
            return out

        return self.runner.call(read())

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for obj in self.objects(plural, namespace):
            if obj.get("metadata", {}).get("name") == name:
                return obj
        return None

    def requests(self) -> list[Any]:
        return list(self.kmock.log)


def kube_client(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def gpu_node(name: str, product: str, cc: str, family: str = "ampere") -> dict[str, Any]:
    major, minor = cc.split(".")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.compute.major": major,
                "nvidia.com/gpu.compute.minor": minor,
                "nvidia.com/gpu.family": family,
            },
        },
    }


def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


class OperatorThread:
    """`modelengine.operator.run.operate` in its own thread and loop, stoppable."""

    def __init__(
        self,
        kubeconfig: Path,
        config: OperatorConfig,
        *,
        namespaces: list[str] | None = None,
        peering: str | None = None,
        priority: int = 0,
        lease_identity: str | None = None,
        lease_namespace: str = "default",
        lease_name: str = "modelengine-operator",
        liveness_endpoint: str | None = None,
        webhook: Callable[[Controller], WebhookService] | None = None,
    ) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.api = ClientApi(kubeconfig=str(kubeconfig), user_agent=config.identity, workers=config.workers)
        elector = None
        if lease_identity is not None:
            elector = LeaseElector(
                api=self.api,
                namespace=lease_namespace,
                name=lease_name,
                identity=lease_identity,
                # Long enough that a leader starved by the builds running on 2 loaded cores
                # keeps its Lease (3 s expired under CI load); failover in the tests comes
                # from a stopping leader releasing it, not from expiry.
                duration_seconds=15,
                renew_seconds=1.0,
            )
        self.controller = Controller(
            config=config,
            api=self.api,
            stores=StoreProvider(read_secret=self.api.read_secret),
            elector=elector,
        )
        self.error: BaseException | None = None
        self._kwargs = dict(
            namespaces=namespaces or [],
            peering=peering,
            priority=priority,
            liveness_endpoint=liveness_endpoint,
            webhook=webhook(self.controller) if webhook is not None else None,
        )
        self.thread = threading.Thread(target=self._run, name=f"operator-{config.identity}", daemon=True)
        self.thread.start()
        if not self.ready_flag.wait(30):
            raise RuntimeError(f"operator did not start: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(
                operate(
                    self.controller,
                    login=connection_info(self.api),
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    **self._kwargs,  # type: ignore[arg-type]
                )
            )
        except BaseException as err:  # surfaced by the test through .error
            self.error = err

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        self.api.close()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.1,
    what: str = "condition",
    show: Callable[[], Any] | None = None,
) -> Any:
    """Poll until `predicate()` is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            seen = f"; last seen: {show()}" if show is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(interval)
        last = predicate()
    return last
