"""HTTP serving: the KServe v2 app (port 8000), the metrics app (port 8002), and
`start_server()`, the in-process entry point the CLI, the demo and the tests share. It
also starts KServe v2 gRPC (port 8001, `grpc_server`) over the same data plane.

Handlers are thin: they read the path and body, call the `DataPlane`, and turn what it
returns (or raises) into a response. One middleware maps every exception, including
aiohttp's own (unknown route, wrong method, body too large), to a KServe-style
`{"error": "..."}` body with a one-line reason, so nothing a client sends produces a
traceback or a 500 for a client mistake.

Slow and vanishing clients: a connection must deliver a request's headers within
`header_timeout` (aiohttp's keep-alive timer also runs from the connection's start, so it
bounds both the header read and idle keep-alive), and the body within `body_timeout`
(408, connection closed after at most `LINGER_SECONDS`). A client that disconnects mid-body is logged at debug: anyone
can do it, so it must not be able to fill the logs.

Graceful shutdown (`RunningServer.stop`, SIGTERM in the CLI): readiness turns false, the
listening sockets close, in-flight requests finish (aiohttp waits for running handlers),
then the engine is freed. HTTP and gRPC drain together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientPayloadError, web

from modelengine.errors import first_line
from modelengine.logs import redact, redact_doc
from modelengine.runtime import accelerator as accel_mod
from modelengine.runtime.accelerator import Accelerator
from modelengine.runtime.dataplane import BatchingConfig, DataPlane
from modelengine.runtime.errors import ClientGone, PayloadTooLarge, RequestTimeout, to_http
from modelengine.runtime.grpc_server import GrpcServer, start_grpc
from modelengine.runtime.loader import BackendFactory, default_backend_factory, installed_versions
from modelengine.runtime.metrics import CONTENT_TYPE, RuntimeMetrics
from modelengine.runtime.protocol import HEADER_LENGTH
from modelengine.runtime.reload import LocalEngine, ReleaseWatcher
from modelengine.store.open import open_store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# After answering a request whose body was not read (408, 413), aiohttp drains what the
# client still sends for this long before closing (its default, 10 s, would let a stalled
# client hold the connection well past --body-timeout).
LINGER_SECONDS = 1.0


@dataclass
class ServerConfig:
    """Everything `modelengine serve` can be told; the Python API takes the same."""

    store_uri: str | None = None
    namespace: str | None = None
    name: str | None = None
    s3_endpoint: str | None = None
    manifest: Path | None = None  # serve a local engine instead of a release record
    model_name: str | None = None  # default: the ModelEngine's name
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC listener; 0: any free port
    metrics_port: int | None = 8002  # None: no metrics listener
    batching: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    instances: int = 2
    inline_max_ms: float = 1.0
    poll_seconds: float = 10.0
    max_request_mib: float = 64.0
    header_timeout: float = 15.0  # seconds to receive a request's headers; also idle keep-alive
    body_timeout: float = 60.0  # seconds to receive a request's body
    cache_dir: Path | None = None
    shutdown_timeout: float = 30.0
    accelerator: Accelerator | None = None  # None: detect with NVML
    installed: Mapping[str, str] | None = None  # None: read from package metadata
    backend_factory: BackendFactory = field(default=default_backend_factory)

    def check(self) -> None:
        if self.manifest is None and not (self.store_uri and self.namespace and self.name):
            raise ValueError("give --store with --namespace and --name, or --manifest/--engine-dir")
        if self.manifest is not None and self.store_uri:
            raise ValueError("--manifest/--engine-dir and --store are exclusive")
        if self.max_batch_size < 1:
            raise ValueError("--max-batch-size must be at least 1")
        if self.max_delay_ms < 0:
            raise ValueError("--max-delay-ms must not be negative")
        if self.max_request_mib <= 0:
            raise ValueError("--max-request-mib must be positive")
        if self.instances < 1:
            raise ValueError("--instances must be at least 1")
        if self.inline_max_ms < 0:
            raise ValueError("--inline-max-ms must not be negative")
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("--header-timeout and --body-timeout must be positive")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": redact(message)}, status=status)


def _error_middleware(max_bytes: int) -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body exceeds the limit of {max_bytes} bytes")
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return _error(err.status, f"{err.reason}: {request.method} {request.path[:200]}")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            status, message = to_http(err)
            if status >= 500 and status != 503:
                log.error("error serving %s %s", request.method, request.path, exc_info=err)
            response = _error(status, message)
            if isinstance(err, (RequestTimeout, ClientGone)):
                response.force_close()  # the rest of the body is not worth waiting for
            return response

    return errors


async def read_body(request: web.Request, *, timeout: float) -> bytes:
    """The whole body within `timeout` seconds: `RequestTimeout` if slower, `ClientGone` if
    the client disconnects first."""
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g}s") from None
    except (ConnectionError, ClientPayloadError) as err:
        log.debug("client disconnected mid-body on %s: %s", request.path, first_line(err))
        raise ClientGone("client disconnected before sending the whole body") from None


def build_app(plane: DataPlane, *, max_bytes: int, body_timeout: float = 60.0) -> web.Application:
    app = web.Application(middlewares=[_error_middleware(max_bytes)], client_max_size=max_bytes)

    async def server_metadata(_r: web.Request) -> web.Response:
        return web.json_response(plane.server_metadata())

    async def live(_r: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(_r: web.Request) -> web.Response:
        ok, doc = plane.ready()
        return web.json_response(redact_doc(doc), status=200 if ok else 503)

    async def model_metadata(r: web.Request) -> web.Response:
        return web.json_response(plane.model_metadata(r.match_info["name"], r.match_info.get("version")))

    async def model_config(r: web.Request) -> web.Response:
        return web.json_response(plane.model_config(r.match_info["name"], r.match_info.get("version")))

    async def model_ready(r: web.Request) -> web.Response:
        ok = plane.model_ready(r.match_info["name"], r.match_info.get("version"))
        return web.json_response({"name": plane.model_name, "ready": ok}, status=200 if ok else 503)

    async def infer(r: web.Request) -> web.Response:
        if r.content_length is not None and r.content_length > max_bytes:
            raise PayloadTooLarge(
                f"request body of {r.content_length} bytes exceeds the limit of {max_bytes} bytes"
            )
        body = await read_body(r, timeout=body_timeout)
        out, header_len = await plane.infer(
            r.match_info["name"], r.match_info.get("version"), body, r.headers.get(HEADER_LENGTH)
        )
        if header_len is None:
            return web.Response(body=out, content_type="application/json")
        return web.Response(
            body=out, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_len)}
        )

    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(base, model_metadata)
        app.router.add_get(base + "/config", model_config)
        app.router.add_get(base + "/ready", model_ready)
        app.router.add_post(base + "/infer", infer)
    return app


def build_metrics_app(metrics: RuntimeMetrics) -> web.Application:
    async def render(_r: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", render)
    return app


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


class RunningServer:
    """A started runtime: `.url` (KServe v2 base URL), `.metrics_url`, `await .stop()`."""

    def __init__(
        self,
        *,
        plane: DataPlane,
        runner: web.AppRunner,
        metrics_runner: web.AppRunner | None,
        source_task: asyncio.Task[None],
        host: str,
        source: ReleaseWatcher | LocalEngine,
        grpc_server: GrpcServer | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.plane = plane
        self.source = source
        self._runner = runner
        self._metrics_runner = metrics_runner
        self._source_task = source_task
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.http_port = _bound_port(runner)
        self.url = f"http://{shown}:{self.http_port}"
        self.metrics_port = _bound_port(metrics_runner) if metrics_runner is not None else None
        self.metrics_url = f"http://{shown}:{self.metrics_port}/metrics" if self.metrics_port else None
        self._grpc = grpc_server
        self._shutdown_timeout = shutdown_timeout
        self.grpc_port = grpc_server.port if grpc_server is not None else None
        # a gRPC target (`host:port`, as tritonclient.grpc takes it)
        self.grpc_target = f"{shown}:{self.grpc_port}" if grpc_server is not None else None
        self._stopped = False

    @property
    def ready(self) -> bool:
        return self.plane.ready()[0]

    def ready_detail(self) -> dict[str, Any]:
        return self.plane.ready()[1]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until an engine is loaded and warmed up; raises TimeoutError with the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"runtime not ready after {timeout:.0f}s: {self.ready_detail().get('reason')}"
                )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Graceful: not-ready, stop accepting, finish in-flight requests, free the engine."""
        if self._stopped:
            return
        self._stopped = True
        self.plane.begin_shutdown()
        self._source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._source_task
        if self._grpc is not None:
            await asyncio.gather(self._runner.cleanup(), self._grpc.stop(self._shutdown_timeout))
        else:
            await self._runner.cleanup()
        await self.plane.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def start_server(config: ServerConfig) -> RunningServer:
    """Start listening at once (live), load the engine in the background (ready later)."""
    config.check()
    accel: Accelerator = (
        config.accelerator if config.accelerator is not None else await asyncio.to_thread(accel_mod.detect)
    )
    installed = dict(config.installed) if config.installed is not None else installed_versions()
    model_name = config.model_name or config.name or "model"
    max_bytes = int(config.max_request_mib * 1024 * 1024)
    plane = DataPlane(
        model_name=model_name,
        max_tensor_bytes=max_bytes,
        batching=BatchingConfig(
            enabled=config.batching,
            max_batch_size=config.max_batch_size,
            max_delay_ms=config.max_delay_ms,
            instances=config.instances,
            inline_max_ms=config.inline_max_ms,
        ),
    )
    plane.set_detail(accelerator=accel.describe())
    log.info("accelerator: %s; installed backends: %s", accel.describe(), installed or "none")
    source: ReleaseWatcher | LocalEngine
    if config.manifest is not None:
        source = LocalEngine(
            plane, manifest_path=config.manifest, installed=installed, backend_factory=config.backend_factory
        )
    else:
        assert config.store_uri and config.namespace and config.name
        store = open_store(config.store_uri, endpoint_url=config.s3_endpoint)
        cache = config.cache_dir or Path(tempfile.gettempdir()) / "modelengine-engines"
        source = ReleaseWatcher(
            plane,
            store=store,
            namespace=config.namespace,
            name=config.name,
            accelerator=accel,
            installed=installed,
            cache_dir=cache,
            backend_factory=config.backend_factory,
        )
    runner = web.AppRunner(
        build_app(plane, max_bytes=max_bytes, body_timeout=config.body_timeout),
        access_log=None,
        shutdown_timeout=config.shutdown_timeout,
        keepalive_timeout=config.header_timeout,
        lingering_time=LINGER_SECONDS,
    )
    await runner.setup()
    await web.TCPSite(runner, config.host, config.http_port, reuse_address=True).start()
    metrics_runner: web.AppRunner | None = None
    if config.metrics_port is not None:
        metrics_runner = web.AppRunner(build_metrics_app(plane.metrics), access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, config.host, config.metrics_port, reuse_address=True).start()
    grpc_server: GrpcServer | None = None
    if config.grpc_port is not None:
        try:
            grpc_server = await start_grpc(
                plane, host=config.host, port=config.grpc_port, max_bytes=max_bytes
            )
        except BaseException:
            await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            raise
    task = asyncio.get_running_loop().create_task(source.run(config.poll_seconds))
    server = RunningServer(
        plane=plane,
        runner=runner,
        metrics_runner=metrics_runner,
        source_task=task,
        host=config.host,
        source=source,
        grpc_server=grpc_server,
        shutdown_timeout=config.shutdown_timeout,
    )
    log.info("KServe v2 on %s, gRPC on %s, metrics on %s", server.url, server.grpc_target, server.metrics_url)
    return server


@contextlib.asynccontextmanager
async def serving(config: ServerConfig) -> AsyncIterator[RunningServer]:
    """`async with serving(cfg) as server:` starts, yields, and stops gracefully."""
    server = await start_server(config)
    try:
        yield server
    finally:
        await server.stop()
