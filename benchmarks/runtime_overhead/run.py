"""The command line, and the order of one model's phases: build, latency (direct, HTTP
binary and JSON, the bare-HTTP floor), throughput with batching off and on, gRPC at 1/8/64
clients (taking turns with Triton's gRPC endpoint at each level), then Triton over HTTP at
64 clients. `--grpc-only` keeps the gRPC phases alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelengine.store.manifest import EngineManifest

from . import CONCURRENCY
from . import __doc__ as PACKAGE_DOC
from .client import direct_latency, engine_ceiling, http_floor, http_latency, percentiles, throughput
from .grpc_client import grpc_throughput
from .models import MODELS, build_engine
from .report import ModelResult, plot, report
from .servers import Server, TritonServer, ort_threads


def run_model(
    name: str,
    work: Path,
    *,
    n: int,
    seconds: float,
    max_delay_ms: float,
    instances: int,
    inline_max_ms: float | None = None,
    triton_python: str | None = None,
    grpc_only: bool = False,
) -> ModelResult:
    print(f"[{name}] export + build", flush=True)
    manifest, engine, sample = build_engine(name, work)
    x = np.random.default_rng(0).standard_normal((1, *sample)).astype(np.float32)
    res = ModelResult(name)
    times, expected = direct_latency(engine, x, n)
    res.direct = percentiles(times)
    res.ceiling = engine_ceiling(engine, sample, min(seconds, 2.0))
    modes = (("on", True),) if grpc_only else (("off", False), ("on", True))
    for mode, batching in modes:
        server = Server(
            manifest,
            batching=batching,
            max_delay_ms=max_delay_ms,
            instances=instances,
            inline_max_ms=inline_max_ms,
        )
        try:
            if not grpc_only:
                if not batching:
                    print(f"[{name}] latency: direct vs HTTP", flush=True)
                    # interleave so drift (thermal, other load) hits both alike
                    res.http_binary = percentiles(http_latency(server.port, x, expected, binary=True, n=n))
                    res.in_server_ms = server.mean_request_ms()
                    res.http_json = percentiles(http_latency(server.port, x, expected, binary=False, n=n))
                    res.direct = percentiles(times + direct_latency(engine, x, n)[0])
                    res.floor = percentiles(http_floor(x, expected, work, n))
                res.throughput[mode], res.p99_ms[mode] = {}, {}
                for clients in CONCURRENCY:
                    print(f"[{name}] throughput, batching {mode}, {clients} clients", flush=True)
                    before = server.batch_histogram() if batching and clients == 64 else {}
                    rps, p99 = asyncio.run(throughput(server.port, x, clients, seconds))
                    if before:
                        res.batches_64 = {
                            k: v - before.get(k, 0.0) for k, v in server.batch_histogram().items()
                        }
                    res.throughput[mode][clients] = rps
                    res.p99_ms[mode][clients] = p99
            if batching and triton_python and not grpc_only:
                res.vs_triton["modelengine"] = _at_64(server.port, x, seconds)
            if batching:
                triton = None
                if triton_python:
                    print(f"[{name}] starting Triton (nvidia-pytriton) for the gRPC comparison", flush=True)
                    triton = TritonServer(
                        triton_python, manifest.parent / engine_file_of(manifest), sample, max_delay_ms
                    )
                try:
                    res.grpc = _grpc_phases(name, server, triton, x, expected, seconds)
                finally:
                    if triton is not None:
                        triton.stop()
        finally:
            server.stop()
    if triton_python and not grpc_only:
        print(f"[{name}] HTTP against Triton (nvidia-pytriton)", flush=True)
        triton = TritonServer(triton_python, manifest.parent / engine_file_of(manifest), sample, max_delay_ms)
        try:
            res.vs_triton["triton"] = _at_64(triton.port, x, seconds)
        finally:
            triton.stop()
    engine.close()
    return res


def _at_64(port: int, x: np.ndarray, seconds: float) -> dict[str, tuple[float, float]]:
    return {
        "binary": asyncio.run(throughput(port, x, 64, seconds, binary=True)),
        "json": asyncio.run(throughput(port, x, 64, seconds, binary=False)),
    }


def _grpc_phases(
    name: str,
    server: Server,
    triton: TritonServer | None,
    x: np.ndarray,
    expected: np.ndarray,
    seconds: float,
) -> dict[str, dict[int, tuple[float, float, float]]]:
    """gRPC at 1/8/64 clients, modelengine and Triton taking turns at each level (both
    servers up, the idle one waiting), so drifting load from other jobs hits both alike."""
    ports = {"modelengine": server.grpc_port, **({"triton": triton.grpc_port} if triton else {})}
    out: dict[str, dict[int, tuple[float, float, float]]] = {who: {} for who in ports}
    for clients in CONCURRENCY:
        for who, port in ports.items():
            print(f"[{name}] gRPC throughput, {who}, {clients} clients", flush=True)
            out[who][clients] = asyncio.run(
                grpc_throughput(f"127.0.0.1:{port}", x, expected, clients, seconds)
            )
    return out


def engine_file_of(manifest: Path) -> str:
    return EngineManifest.model_validate_json(manifest.read_text()).engine_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=PACKAGE_DOC.splitlines()[0] if PACKAGE_DOC else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: CombinedNet only, short phases")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--seconds", type=float, default=2.5, help="seconds per throughput phase")
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per latency run")
    parser.add_argument("--max-delay-ms", type=float, default=2.0, help="server batching delay")
    parser.add_argument("--instances", type=int, default=2, help="server engine executions at once")
    parser.add_argument(
        "--inline-max-ms", type=float, help="the server's --inline-max-ms (default: the server's default)"
    )
    parser.add_argument(
        "--triton-python",
        metavar="PYTHON",
        help="a Python with nvidia-pytriton (and numpy<2, onnxruntime): also measure the real Triton server",
    )
    parser.add_argument(
        "--grpc-only",
        action="store_true",
        help="only the gRPC phases: modelengine (batching on), and Triton with --triton-python",
    )
    parser.add_argument("--plot", type=Path, help="write the throughput plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.quick:
        models, args.seconds, args.requests = ["combinednet"], 0.4, 40
    started = time.perf_counter()
    results: list[ModelResult] = []
    with tempfile.TemporaryDirectory(prefix="modelengine-bench-") as tmp:
        for name in models:
            results.append(
                run_model(
                    name,
                    Path(tmp),
                    n=args.requests,
                    seconds=args.seconds,
                    max_delay_ms=args.max_delay_ms,
                    instances=args.instances,
                    inline_max_ms=args.inline_max_ms,
                    triton_python=args.triton_python,
                    grpc_only=args.grpc_only,
                )
            )
    print("\n".join(report(results)))
    print(
        f"\n(total {time.perf_counter() - started:.0f} s; {len(os.sched_getaffinity(0))} CPUs usable of "
        f"{os.cpu_count()}; ORT intra-op threads {ort_threads()}; python {sys.version.split()[0]})"
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
    if args.plot and not args.grpc_only:
        plot(results, args.plot)
    return 0
