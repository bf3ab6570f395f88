"""`modelengine serve`: run the runtime sidecar until SIGTERM/SIGINT.

Only argument parsing and signal handling live here; the server is `server.start_server`
(imported when the command runs, so `modelengine --help` stays light). On SIGTERM the
server stops gracefully: not-ready first, then no new connections, in-flight requests
finish, the engine is freed, the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from modelengine.errors import InputError


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve the engine for this machine's GPU over KServe v2 (HTTP and gRPC) with Prometheus metrics",
        description=(
            "Select the engine for this machine's accelerator from a release record (or serve a local "
            "engine), then serve it over the Open Inference Protocol (KServe v2, HTTP and gRPC) with dynamic batching, "
            "metrics and hot reload."
        ),
    )
    src = p.add_argument_group("what to serve")
    src.add_argument("--store", metavar="URI", help="store URI (file:///dir or s3://bucket/prefix)")
    src.add_argument("--s3-endpoint", metavar="URL", help="S3 endpoint URL (MinIO, moto, ...)")
    src.add_argument("--namespace", metavar="NS", help="namespace of the ModelEngine (release record)")
    src.add_argument("--name", metavar="NAME", help="name of the ModelEngine (release record)")
    src.add_argument(
        "--manifest",
        "--engine-dir",
        dest="manifest",
        metavar="PATH",
        type=Path,
        help="serve a local engine: its manifest.json, or the directory holding it (no release record)",
    )
    src.add_argument("--model-name", help="model name in the v2 API (default: the ModelEngine's name)")
    src.add_argument("--cache-dir", type=Path, help="where downloaded engines are kept")
    src.add_argument(
        "--poll-seconds", type=float, default=10.0, help="release record poll interval; 0 = no hot reload"
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    net.add_argument("--http-port", type=int, default=8000, help="KServe v2 HTTP port (default 8000)")
    net.add_argument(
        "--grpc-port", type=int, default=8001, help="KServe v2 gRPC port (default 8001; 0 = no gRPC)"
    )
    net.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (default 8002)")
    net.add_argument(
        "--max-request-mib",
        type=float,
        default=64.0,
        help="request body limit in MiB; also bounds the bytes a request's declared shapes may need",
    )
    net.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        help="seconds a connection may take to send a request's headers (and stay idle) (default 15)",
    )
    net.add_argument(
        "--body-timeout", type=float, default=60.0, help="seconds to receive a request body (default 60)"
    )
    bat = p.add_argument_group("execution")
    bat.add_argument("--max-batch-size", type=int, default=64, help="largest merged batch (rows)")
    bat.add_argument("--max-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    bat.add_argument("--no-batching", action="store_true", help="run every request on its own")
    bat.add_argument("--instances", type=int, default=2, help="engine executions running at once")
    bat.add_argument(
        "--inline-max-ms",
        type=float,
        default=1.0,
        help="a lone request whose engine runs average at most this long runs on the event loop, "
        "skipping the thread hand-off; 0 = always use the inference threads (default 1.0)",
    )
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from modelengine.runtime.server import ServerConfig

    manifest: Path | None = args.manifest
    if manifest is not None and manifest.is_dir():
        manifest = manifest / "manifest.json"
    return ServerConfig(
        store_uri=args.store,
        namespace=args.namespace,
        name=args.name,
        s3_endpoint=args.s3_endpoint,
        manifest=manifest,
        model_name=args.model_name,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port or None,
        metrics_port=args.metrics_port,
        batching=not args.no_batching,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        instances=args.instances,
        inline_max_ms=args.inline_max_ms,
        poll_seconds=args.poll_seconds,
        max_request_mib=args.max_request_mib,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        cache_dir=args.cache_dir,
    )


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        config.check()
    except ValueError as err:
        raise InputError(str(err)) from None
    asyncio.run(_serve(config))
    return 0


async def _serve(config: Any) -> None:
    from modelengine.runtime.server import start_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await start_server(config)
    grpc = f"gRPC on {server.grpc_target}, " if server.grpc_target else ""
    print(f"modelengine serve: KServe v2 on {server.url}, {grpc}metrics on {server.metrics_url}", flush=True)
    await stop.wait()
    print("modelengine serve: shutting down (finishing in-flight requests)", flush=True)
    await server.stop()
