"""How requests are made and timed: KServe v2 bodies (JSON and binary), a minimal
keep-alive socket client, sequential latency, concurrent throughput, and the same
engine called in-process (the baseline every overhead is measured against).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.backends.base import Engine

from . import MAX_BATCH
from .servers import BARE_SERVER, free_port, wait_ready


def engine_ceiling(engine: Engine, sample: tuple[int, ...], seconds: float) -> tuple[float, float]:
    """In-process samples/s at batch 1 and at batch 64: the most batching can gain."""
    out = []
    for batch in (1, MAX_BATCH):
        x = np.random.default_rng(1).standard_normal((batch, *sample)).astype(np.float32)
        engine.infer({"input": x})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            engine.infer({"input": x})
            n += batch
        out.append(n / (time.perf_counter() - start))
    return out[0], out[1]


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _loads(raw: bytes) -> Any:
    try:
        import orjson
    except ImportError:  # pragma: no cover
        return json.loads(raw)
    return orjson.loads(raw)


def http_floor(x: np.ndarray, expected: np.ndarray, work: Path, n: int) -> list[float]:
    """The same client loop against a bare aiohttp handler that reads the body and returns a
    canned response of the same bytes: what HTTP alone costs, with no model and no server logic."""
    from modelengine.runtime.protocol import encode_response

    body, hlen = encode_response(
        model_name="model", model_version="1", request_id=None, outputs=[("output", expected, True)]
    )
    canned = work / "canned.bin"
    canned.write_bytes(body)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port), str(canned), str(hlen)], stderr=subprocess.PIPE
    )
    try:
        wait_ready(port, proc)
        return http_latency(port, x, expected, binary=True, n=n)
    finally:
        proc.terminate()
        proc.wait(10)


def json_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    doc = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    return json.dumps(doc).encode(), {"Content-Type": "application/json"}


def binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = x.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + raw, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def decode(resp_body: bytes, header_len: str | None) -> np.ndarray:
    if header_len is None:
        doc = _loads(resp_body)
        out = doc["outputs"][0]
        return np.array(out["data"], np.float32).reshape(out["shape"])
    hl = int(header_len)
    out = json.loads(resp_body[:hl])["outputs"][0]
    return np.frombuffer(resp_body[hl:], np.float32).reshape(out["shape"])


class KeepAliveClient:
    """The least a client can do per request: one pre-built HTTP/1.1 request on a keep-alive
    socket (TCP_NODELAY), then the status line, the two headers that matter and
    Content-Length bytes of body. Strict enough for the servers measured here (they always
    send Content-Length; anything else is an error), cheap enough not to be what is measured."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str]) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._request = (head + "\r\n").encode() + body
        self._buf = b""

    def post(self) -> tuple[int, bytes, str | None]:
        """(status, body, Inference-Header-Content-Length or None)."""
        self._sock.sendall(self._request)
        buf = self._buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        lines = buf[:end].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, header_len = -1, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"inference-header-content-length":
                header_len = value.strip().decode()
        if length < 0:
            raise SystemExit("response without Content-Length")
        buf = buf[end + 4 :]
        while len(buf) < length:
            buf += self._recv()
        self._buf = buf[length:]
        return status, buf[:length], header_len

    def _recv(self) -> bytes:
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("server closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


def http_latency(port: int, x: np.ndarray, expected: np.ndarray, *, binary: bool, n: int) -> list[float]:
    """Client-side latency: send the (pre-encoded) request, read and decode the answer."""
    body, headers = binary_body(x) if binary else json_body(x)
    client = KeepAliveClient(port, "/v2/models/model/infer", body, headers)
    times: list[float] = []
    try:
        for i in range(n + 10):
            t0 = time.perf_counter()
            status, data, header_len = client.post()
            got = decode(data, header_len)
            dt = time.perf_counter() - t0
            if status != 200:
                raise SystemExit(f"HTTP {status}: {data[:200]!r}")
            if i >= 10:
                times.append(dt)
    finally:
        client.close()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    return times


def direct_latency(engine: Engine, x: np.ndarray, n: int) -> tuple[list[float], np.ndarray]:
    times: list[float] = []
    out = engine.infer({"input": x})
    for _ in range(n):
        t0 = time.perf_counter()
        out = engine.infer({"input": x})
        times.append(time.perf_counter() - t0)
    return times, out["output"]


async def throughput(
    port: int, x: np.ndarray, clients: int, seconds: float, *, binary: bool = True
) -> tuple[float, float]:
    import aiohttp

    body, headers = binary_body(x) if binary else json_body(x)
    url = f"http://127.0.0.1:{port}/v2/models/model/infer"
    done = 0
    lat: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(stop_at: float, record: bool) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"HTTP {resp.status} from {url}: {(await resp.read())[:200]!r}")
                if record:
                    done += 1
                    lat.append(time.perf_counter() - t0)

        warm = time.perf_counter() + min(0.5, seconds / 4)
        await asyncio.gather(*(one(warm, False) for _ in range(clients)))
        start = time.perf_counter()
        await asyncio.gather(*(one(start + seconds, True) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return done / elapsed, percentiles(lat)[1]
