"""`KubeApi` over the official `kubernetes` client, its calls run in a small thread pool,
with the usual kubeconfig / in-cluster configuration.

Connections: every call asks for the raw response (`_preload_content=False`: no model
deserialisation) and `_call` reads its body and hands the connection back to the client's
one urllib3 pool before returning bytes. An unreleased response keeps its connection
checked out, so the next call opens a new one, which over TLS means a new handshake and a
new SSL context per request; with the release, a handful of pooled connections serve
everything (tests/operator/test_kube_connections.py counts them on the server side).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelengine.api.models import API_GROUP, API_VERSION, PLURAL
from modelengine.operator.kube import ApiError, Listing, api_message

LIST_PAGE = 250  # items per page of a LIST (a real server's default page is unlimited)


def _is_api_status(body: bytes) -> bool:
    """Whether an error body is a `Status` the API server wrote (not the pod's answer)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("apiVersion") == "v1"


class JsonLinesStream:
    """A WATCH response read as it arrives: one JSON event per line."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def events(self) -> Iterator[dict[str, Any]]:
        pending = b""
        for chunk in self._response.stream(amt=None, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event

    def close(self) -> None:
        """End the stream. Still streaming (a stop, another thread blocked in a read): shut
        the socket down, which ends that read, and close the connection rather than pool
        it. Ended by the server: urllib3 has already put the connection back."""
        if self._response.connection is None:
            return
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self._response.shutdown()
        self._response.close()


class ClientApi:
    """`KubeApi` over the official client; each call runs in a small thread pool."""

    def __init__(
        self, *, kubeconfig: str | None = None, user_agent: str = "modelengine-operator", workers: int = 8
    ):
        from kubernetes import client, config

        try:
            if kubeconfig:
                configuration = client.Configuration()
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            else:
                try:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    configuration = client.Configuration()
                    config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as err:
            raise ApiError(0, f"no Kubernetes configuration: {api_message(err)}") from None
        configuration.connection_pool_maxsize = max(workers, 4)
        self.configuration = configuration
        self._api = client.ApiClient(configuration)
        self._api.user_agent = user_agent
        self._batch = client.BatchV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        self._coordination = client.CoordinationV1Api(self._api)
        apps, autoscaling = client.AppsV1Api(self._api), client.AutoscalingV2Api(self._api)
        policy = client.PolicyV1Api(self._api)
        self._apps = apps
        # kind → (read, create, patch, delete) of the namespaced typed API
        self._serving: dict[str, tuple[Any, Any, Any, Any]] = {
            "Deployment": (
                apps.read_namespaced_deployment,
                apps.create_namespaced_deployment,
                apps.patch_namespaced_deployment,
                apps.delete_namespaced_deployment,
            ),
            "Service": (
                self._core.read_namespaced_service,
                self._core.create_namespaced_service,
                self._core.patch_namespaced_service,
                self._core.delete_namespaced_service,
            ),
            "HorizontalPodAutoscaler": (
                autoscaling.read_namespaced_horizontal_pod_autoscaler,
                autoscaling.create_namespaced_horizontal_pod_autoscaler,
                autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            ),
            "PodDisruptionBudget": (
                policy.read_namespaced_pod_disruption_budget,
                policy.create_namespaced_pod_disruption_budget,
                policy.patch_namespaced_pod_disruption_budget,
                policy.delete_namespaced_pod_disruption_budget,
            ),
        }
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube-api")

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> bytes:
        """Run one raw API call in the pool; returns the body, the connection released."""
        from kubernetes.client.exceptions import ApiException

        loop = asyncio.get_running_loop()

        def call() -> bytes:
            try:
                response = fn(*args, _preload_content=False, **kwargs)
            except ApiException as err:  # the client read the error body: nothing held
                raise ApiError(int(err.status or 0), api_message(err)) from None
            except Exception as err:  # connection errors: urllib3 and friends
                raise ApiError(0, api_message(err)) from None
            try:
                return bytes(response.data or b"")
            except Exception as err:  # the connection broke while reading the body
                raise ApiError(0, api_message(err)) from None
            finally:
                response.release_conn()

        return await loop.run_in_executor(self._pool, call)

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self._batch.create_namespaced_job, namespace, body)

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._call(
            self._batch.delete_namespaced_job,
            name,
            namespace,
            body={"propagationPolicy": "Background"},
        )

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        raw = await self._call(
            self._custom.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
        try:
            version = json.loads(raw).get("metadata", {}).get("resourceVersion")
        except (ValueError, AttributeError):
            return None
        return str(version) if version is not None else None

    async def patch_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> None:
        await self._call(
            self._custom.patch_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": metadata},
            _content_type="application/merge-patch+json",
        )

    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        raw = await self._call(
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"job-name={job_name}",
        )
        items: list[dict[str, Any]] = json.loads(raw).get("items") or []
        return [p for p in items if (p.get("metadata", {}).get("labels") or {}).get("job-name") == job_name]

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        raw = await self._call(self._core.list_namespaced_pod, namespace, label_selector=label_selector)
        items: list[dict[str, Any]] = json.loads(raw).get("items") or []
        return items

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> tuple[int, bytes]:
        from kubernetes.client.exceptions import ApiException

        loop = asyncio.get_running_loop()

        def call() -> tuple[int, bytes]:
            try:
                response = self._core.connect_get_namespaced_pod_proxy_with_path(
                    f"{pod}:{port}", namespace, path.lstrip("/"), _preload_content=False
                )
            except ApiException as err:
                body = err.body.encode() if isinstance(err.body, str) else bytes(err.body or b"")
                if _is_api_status(body):  # the API server's own refusal (403, 404, 503...)
                    raise ApiError(int(err.status or 0), api_message(err)) from None
                return int(err.status or 0), body  # the pod's non-2xx answer: its body is the point
            except Exception as err:
                raise ApiError(0, api_message(err)) from None
            try:
                return int(response.status), bytes(response.data or b"")
            finally:
                response.release_conn()

        return await loop.run_in_executor(self._pool, call)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            raw = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        data: dict[str, str] = json.loads(raw).get("data") or {}
        return data

    async def list_nodes(self) -> list[dict[str, Any]]:
        raw = await self._call(self._core.list_node)
        items: list[dict[str, Any]] = json.loads(raw).get("items") or []
        return items

    async def list_jobs(
        self,
        namespace: str | None,
        label_selector: str,
        *,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Listing:
        """Every matching Job, read in pages of `LIST_PAGE` (`limit` + `continue`), each item
        passed through `transform` as its page arrives: with a slimming transform, memory
        holds one page of full Jobs at a time, not the whole list (1,500 Jobs as a v1.36
        server sends them are ~10 MB of JSON, ~50 MB parsed)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"label_selector": label_selector, "limit": LIST_PAGE}
            if token:
                paging["_continue"] = token
            if namespace is None:
                raw = await self._call(self._batch.list_job_for_all_namespaces, **paging)
            else:
                raw = await self._call(self._batch.list_namespaced_job, namespace, **paging)
            page = json.loads(raw)
            del raw
            items.extend(transform(i) if transform else i for i in page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                # The last page's version is the list's: a consistent snapshot across pages.
                return Listing(items, str(meta.get("resourceVersion") or ""))

    def watch_jobs(
        self, namespace: str | None, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> JsonLinesStream:
        """Open a WATCH of Jobs from `resource_version` (blocking: call it from a thread).

        `watch="true"`, not `True`: the client would send `True`, which a real server takes
        but KMock-based fakes read as a plain LIST."""
        from kubernetes.client.exceptions import ApiException

        options: dict[str, Any] = {
            "label_selector": label_selector,
            "watch": "true",
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
            "_preload_content": False,
            "_request_timeout": (30, timeout_seconds + 30),
        }
        try:
            if namespace is None:
                response = self._batch.list_job_for_all_namespaces(**options)
            else:
                response = self._batch.list_namespaced_job(namespace, **options)
        except ApiException as err:
            raise ApiError(int(err.status or 0), api_message(err)) from None
        except Exception as err:
            raise ApiError(0, api_message(err)) from None
        return JsonLinesStream(response)

    async def list_deployments(self, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
        if namespace is None:
            raw = await self._call(
                self._apps.list_deployment_for_all_namespaces, label_selector=label_selector
            )
        else:
            raw = await self._call(
                self._apps.list_namespaced_deployment, namespace, label_selector=label_selector
            )
        items: list[dict[str, Any]] = json.loads(raw).get("items") or []
        return items

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            raw = await self._call(self._coordination.read_namespaced_lease, name, namespace)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(raw)
        return lease

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = await self._call(self._coordination.create_namespaced_lease, namespace, body)
        lease: dict[str, Any] = json.loads(raw)
        return lease

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = await self._call(
            self._coordination.patch_namespaced_lease,
            name,
            namespace,
            body,
            _content_type="application/merge-patch+json",
        )
        lease: dict[str, Any] = json.loads(raw)
        return lease

    def _calls(self, kind: str) -> tuple[Any, Any, Any, Any]:
        try:
            return self._serving[kind]
        except KeyError:
            raise ApiError(0, f"unsupported kind {kind!r}") from None

    async def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            raw = await self._call(self._calls(kind)[0], name, namespace)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        obj: dict[str, Any] = json.loads(raw)
        return obj

    async def create_object(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self._calls(kind)[1], namespace, body)

    async def patch_object(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        await self._call(
            self._calls(kind)[2],
            name,
            namespace,
            body,
            _content_type="application/merge-patch+json",
        )

    async def delete_object(self, kind: str, namespace: str, name: str) -> None:
        await self._call(
            self._calls(kind)[3],
            name,
            namespace,
            body={"propagationPolicy": "Background"},
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()
