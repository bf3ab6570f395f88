"""The few Kubernetes API calls the controller makes, behind one small Protocol.

Everything the controller *reads* comes from watch streams (kopf's for ModelEngines,
Deployments and Nodes; `job_watch` for builder Jobs), so steady state costs no GETs; the
calls here are the writes (Job create/delete, status and finalizer patches, serving
objects) and a few rare reads (a failed Job's Pods for the builder's termination message,
a storage Secret, a not-ready pod's health through the API server's proxy). The
implementation over the official `kubernetes` client is `kube_client.ClientApi`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol


class Listing(NamedTuple):
    items: list[dict[str, Any]]
    resource_version: str  # where a WATCH of the same objects resumes


class ApiError(Exception):
    """An API call failed; `status` is the HTTP status (0 when no answer came)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class WatchStream(Protocol):
    """An open WATCH: its events as they arrive (blocking), and a way to end it."""

    def events(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class KubeApi(Protocol):
    async def create_job(self, namespace: str, body: dict[str, Any]) -> None: ...

    async def delete_job(self, namespace: str, name: str) -> None: ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        """Merge-patch the status subresource; returns the new resourceVersion."""
        ...

    async def patch_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> None: ...

    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]: ...

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None: ...

    async def list_nodes(self) -> list[dict[str, Any]]: ...

    async def list_jobs(
        self,
        namespace: str | None,
        label_selector: str,
        *,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Listing: ...

    def watch_jobs(
        self, namespace: str | None, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> WatchStream: ...

    async def list_deployments(self, namespace: str | None, label_selector: str) -> list[dict[str, Any]]: ...

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> tuple[int, bytes]:
        """GET `path` on a pod's port through the API server's proxy: (status, body)."""
        ...

    # spec.serving: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget (by `kind`)
    async def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_object(self, kind: str, namespace: str, body: dict[str, Any]) -> None: ...

    async def patch_object(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge patch."""
        ...

    async def delete_object(self, kind: str, namespace: str, name: str) -> None: ...


def api_message(err: Exception) -> str:
    """The one-line reason of a client error: the API's Status message, else its text."""
    body = getattr(err, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:300]
        except (ValueError, AttributeError):
            return str(body)[:300]
    return (str(err).splitlines() or [type(err).__name__])[0][:300]
