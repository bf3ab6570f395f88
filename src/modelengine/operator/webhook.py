"""Sidecar injection: a mutating admission webhook that adds the runtime to annotated Pods.

A Pod annotated `modelengine.io/inject: <modelengine-name>` gets the runtime container
(`serving_objects.runtime_container`, the same container the operator's own serving pods
run: command, ports, probes, `envFrom` of the store credentials) and its /tmp emptyDir,
appended by a JSONPatch, so the user's containers and volumes keep their indices and
bytes. Only Pods are mutated, never Deployments: a Deployment's pods are created from
its template and pass through here, and a mutated Deployment would differ from what Git
holds, which GitOps tools report as drift forever (the way Istio injects, too).

What the webhook answers, per AdmissionReview v1 (`uid` echoed):

- no annotation, or the sidecar already there (a re-invocation): allowed, no patch;
- the ModelEngine exists in the Pod's namespace and has a Ready engine: allowed + patch;
- otherwise refused (`allowed: false`) with one line naming the ModelEngine and the fix.
  A pod whose runtime could never turn ready fails where the user looks, at creation.

ModelEngines are read from the operator's informer cache (`controller.cache`), filled by
its watches: an admission costs no API call. Every replica serves the webhook (all sit
behind the Service), leader or not: the watches run on each.

The server is aiohttp over HTTPS; `WebhookService.run` keeps the certificate fresh
(`webhook_certs`), reloading it into the live SSL context, so rotation needs no restart.
A malformed review is a 400 with one line, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from modelengine.api.validation import SpecError, parse_modelengine
from modelengine.errors import first_line
from modelengine.operator.config import OperatorConfig
from modelengine.operator.serving_objects import GRPC_PORT, HTTP_PORT, METRICS_PORT, runtime_container
from modelengine.operator.webhook_certs import ServingCert, WebhookCerts

log = logging.getLogger("modelengine.operator.webhook")

ANNOTATION = "modelengine.io/inject"
CONTAINER = "modelengine-runtime"
VOLUME = "modelengine-runtime-tmp"
PATH = "/mutate-pods"
REVIEW_VERSION = "admission.k8s.io/v1"
RUNTIME_PORTS = {HTTP_PORT: "http", GRPC_PORT: "grpc", METRICS_PORT: "metrics"}
REFRESH_SECONDS = 60.0  # re-read the Secret and caBundle: renewals, and a caBundle an upgrade reset
RETRY_SECONDS = 15.0


class ModelEngineCache(Protocol):
    """The informer cache the webhook reads (`Informers`): ModelEngines by (namespace, name)."""

    @property
    def modelengines(self) -> Mapping[tuple[str, str], dict[str, Any]]: ...


class Refused(Exception):
    """An injection the webhook refuses; the message is the one line the user sees."""


class MalformedReview(Exception):
    """Not an AdmissionReview v1 request; answered 400."""


def injection_patch(
    pod: dict[str, Any], namespace: str, *, cache: ModelEngineCache, config: OperatorConfig
) -> list[dict[str, Any]]:
    """The JSONPatch that injects the runtime into `pod` ([] = leave it as it is)."""
    meta = pod.get("metadata") or {}
    target = (meta.get("annotations") or {}).get(ANNOTATION)
    if target is None:
        return []
    spec = pod.get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    if any(c.get("name") == CONTAINER for c in containers + list(spec.get("initContainers") or [])):
        return []  # injected already (a re-invocation, or a pod copied from an injected one)
    name = str(target).strip()
    if not name:
        raise Refused(f"annotation {ANNOTATION} is empty: set it to the name of a ModelEngine in {namespace}")
    doc = cache.modelengines.get((namespace, name))
    if doc is None:
        raise Refused(
            f"ModelEngine {namespace}/{name} (annotation {ANNOTATION}) not found: "
            "apply it first, or fix the name in the annotation"
        )
    status = doc.get("status") or {}
    ready = [e for e in status.get("engines") or [] if isinstance(e, dict) and e.get("phase") == "Ready"]
    if not ready:
        raise Refused(
            f"ModelEngine {namespace}/{name} has no Ready engine yet (phase {status.get('phase') or 'Pending'}): "
            "the runtime could not load one; create the pod once an engine is Ready"
        )
    try:
        me = parse_modelengine({k: v for k, v in doc.items() if k != "status"})
    except SpecError as err:
        raise Refused(f"ModelEngine {namespace}/{name} is invalid: {first_line(err)}") from None
    for container in containers:
        for port in container.get("ports") or []:
            number = port.get("containerPort") if isinstance(port, dict) else None
            if number in RUNTIME_PORTS:
                raise Refused(
                    f"container {container.get('name')!r} uses port {number}, which the injected runtime "
                    f"needs for {RUNTIME_PORTS[number]} (8000 http, 8001 grpc, 8002 metrics)"
                )
    if any(isinstance(v, dict) and v.get("name") == VOLUME for v in spec.get("volumes") or []):
        raise Refused(f"the pod already has a volume named {VOLUME!r}, which the injected runtime needs")
    serving = me.spec.serving
    resources = serving.resources if serving is not None else None
    cpu = (resources.cpu if resources else None) or config.runtime_cpu
    memory = (resources.memory if resources else None) or config.runtime_memory
    limits = {"memory": memory}
    if any(e.get("computeCapability") for e in ready):  # a GPU engine: the runtime needs the GPU
        limits["nvidia.com/gpu"] = "1"
    container = runtime_container(
        me=me,
        image=(serving.image if serving is not None else None) or config.runtime_image,
        requests={"cpu": cpu, "memory": memory},
        limits=limits,
    )
    # Names of its own, so they cannot clash with the user's container or volume names.
    container["name"] = CONTAINER
    container["volumeMounts"] = [{**m, "name": VOLUME} for m in container.get("volumeMounts") or []]
    volume = {"name": VOLUME, "emptyDir": {}}
    patch: list[dict[str, Any]] = [{"op": "add", "path": "/spec/containers/-", "value": container}]
    if spec.get("volumes"):
        patch.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    return patch


def parse_review(body: Any) -> dict[str, Any]:
    """The `request` of an AdmissionReview v1; MalformedReview when it is not one."""
    if not isinstance(body, dict):
        raise MalformedReview("body is not a JSON object (expected an AdmissionReview)")
    if body.get("apiVersion") != REVIEW_VERSION or body.get("kind") != "AdmissionReview":
        raise MalformedReview(
            f"expected apiVersion {REVIEW_VERSION} kind AdmissionReview, "
            f"got {body.get('apiVersion')!r} {body.get('kind')!r}"
        )
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise MalformedReview("AdmissionReview has no request.uid")
    if request.get("object") is not None and not isinstance(request["object"], dict):
        raise MalformedReview("request.object is not an object")
    return request


def review_response(
    uid: str, *, patch: list[dict[str, Any]] | None = None, refusal: str | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": refusal is None}
    if refusal is not None:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": refusal}
    elif patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": REVIEW_VERSION, "kind": "AdmissionReview", "response": response}


def admit(review: Any, *, cache: ModelEngineCache, config: OperatorConfig) -> dict[str, Any]:
    """The AdmissionReview answering `review` (MalformedReview when it is not one)."""
    request = parse_review(review)
    uid = request["uid"]
    pod = request.get("object") or {}
    kind = (request.get("kind") or {}).get("kind")
    if request.get("operation") not in (None, "CREATE") or kind not in (None, "Pod"):
        return review_response(uid)  # the configuration sends Pod CREATEs only; others pass
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default"
    try:
        patch = injection_patch(pod, namespace, cache=cache, config=config)
    except Refused as refusal:
        log.info("injection refused for a pod in %s: %s", namespace, refusal)
        return review_response(uid, refusal=str(refusal))
    if patch:
        target = (pod.get("metadata") or {}).get("annotations", {}).get(ANNOTATION)
        log.debug("runtime injected into a pod in %s (ModelEngine %s)", namespace, target)
    return review_response(uid, patch=patch)


def make_app(*, cache: ModelEngineCache, config: OperatorConfig) -> web.Application:
    async def mutate_pods(request: web.Request) -> web.Response:
        try:
            review = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError) as err:
            return web.Response(status=400, text=f"body is not JSON: {first_line(err)}\n")
        try:
            answer = admit(review, cache=cache, config=config)
        except MalformedReview as err:
            return web.Response(status=400, text=f"{err}\n")
        return web.json_response(answer)

    app = web.Application(client_max_size=8 * 1024 * 1024)  # a Pod object can be large
    app.router.add_post(PATH, mutate_pods)
    return app


class WebhookServer:
    """The HTTPS server; `reload` swaps the certificate for new handshakes."""

    def __init__(
        self, *, cache: ModelEngineCache, config: OperatorConfig, port: int, host: str = "0.0.0.0"
    ) -> None:
        self._app = make_app(cache=cache, config=config)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._context: ssl.SSLContext | None = None
        self.cert: ServingCert | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for 0)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    async def start(self, cert: ServingCert) -> None:
        self._context = cert.server_context()
        self.cert = cert
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=self._context).start()

    def reload(self, cert: ServingCert) -> None:
        if self._context is None or cert == self.cert:
            return
        cert.load_into(self._context)
        self.cert = cert
        log.info(
            "webhook now serves a certificate valid until %s", cert.not_after.isoformat(timespec="seconds")
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class WebhookService:
    """The server plus its certificate upkeep, run beside the operator (`operate`)."""

    def __init__(
        self, *, server: WebhookServer, certs: WebhookCerts, refresh_seconds: float = REFRESH_SECONDS
    ) -> None:
        self.server = server
        self.certs = certs
        self.refresh_seconds = refresh_seconds
        self.started = asyncio.Event()

    async def refresh(self) -> None:
        """Issue/rotate/read the certificate; start the server or reload it."""
        cert = await self.certs.ensure()
        if self.server.cert is None:
            await self.server.start(cert)
            self.started.set()
            log.info("injection webhook serving HTTPS on :%d%s", self.server.port, PATH)
        else:
            self.server.reload(cert)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.refresh()
                    delay = self.refresh_seconds
                except Exception as err:  # the operator keeps running; the webhook retries
                    log.error("injection webhook: %s", first_line(err))
                    delay = RETRY_SECONDS
                await asyncio.sleep(delay)
        finally:
            await self.server.stop()
