"""The gRPC load: N concurrent KServe v2 gRPC clients sending batch-1 `ModelInfer` calls,
the same bytes to modelengine and to Triton.

Each client has its own channel (its own HTTP/2 connection: a local subchannel pool, as
separate client processes would have) and sends one pre-serialized request (raw input
contents, as tritonclient sends them), so per-request client work is the least gRPC
allows and the same for both servers; every answer is parsed and checked for one output
of the expected size, and the first one against the in-process engine's output.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from .client import percentiles

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(x: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name="model", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.outputs.add(name="output")
    return bytes(request.SerializeToString())


def _output(raw: bytes) -> np.ndarray:
    response = pb.ModelInferResponse.FromString(raw)
    if len(response.raw_output_contents) != 1:
        raise SystemExit(f"gRPC answer without one raw output: {str(response)[:200]}")
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(
        tuple(response.outputs[0].shape)
    )


def _method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """ModelInfer taking and returning serialized bytes (no per-call message building)."""
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    return method


async def grpc_throughput(
    target: str, x: np.ndarray, expected: np.ndarray, clients: int, seconds: float
) -> tuple[float, float, float]:
    """(requests/s, client p50 ms, client p99 ms) of `clients` concurrent gRPC clients."""
    body = infer_request(x)
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(clients)
    ]
    done = 0
    lat: list[float] = []
    try:
        first = _output(await _method(channels[0])(body, timeout=60))
        np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-4)
        size = first.nbytes

        async def one(channel: grpc.aio.Channel, stop_at: float, record: bool) -> None:
            nonlocal done
            call = _method(channel)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                if _output(await call(body, timeout=60)).nbytes != size:
                    raise SystemExit(f"gRPC answer of the wrong size from {target}")
                if record:
                    done += 1
                    lat.append(time.perf_counter() - t0)

        warm = time.perf_counter() + min(0.5, seconds / 4)
        await asyncio.gather(*(one(c, warm, False) for c in channels))
        start = time.perf_counter()
        await asyncio.gather(*(one(c, start + seconds, True) for c in channels))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    p50, p99 = percentiles(lat)
    return done / elapsed, p50, p99
