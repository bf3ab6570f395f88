"""Runtime overhead: a direct engine call vs the same inference through the HTTP server,
and throughput with dynamic batching off vs on, side by side in one run.

For each model (the seed's CombinedNet on 3x32x32 from examples/, and a ResNet-style net
on 3x64x64 defined here) the script exports ONNX with a dynamic batch axis, builds the
ONNX Runtime engine, writes its manifest, and then measures:

- latency (batch 1, sequential): `Engine.infer` in this process (the baseline), then the
  same input through `modelengine serve` (a separate process, as in a pod) over one
  keep-alive connection, with a JSON body and with the binary-data extension, and a bare
  aiohttp handler answering the same bytes (the floor of HTTP itself). The client is a
  minimal keep-alive HTTP/1.1 client on a raw socket (pre-built request, reads the status,
  Content-Length and the body, decodes the tensor): `http.client` spent ~0.2 ms per
  request of its own parsing headers, which is client cost, not server overhead;
- throughput (requests/s, batch 1 each) at 1, 8 and 64 concurrent clients (aiohttp,
  binary), once with `--no-batching` and once with dynamic batching, with the server's
  batch-size histogram over the 64-client phase (how full the batches it formed were).

Targets (docs/runtime.md): p50 HTTP overhead (binary) <= 0.3 ms over the direct call;
>= 3x throughput with batching at 64 clients. Overhead is reported raw (HTTP p50 minus
direct p50, what the target is checked against) and with the bare-HTTP floor subtracted
as well (what the server adds beyond an empty aiohttp handler).

    python benchmarks/runtime_overhead.py                    # both models (~2 minutes on 2 cores)
    python benchmarks/runtime_overhead.py --quick            # smoke run (CombinedNet, short)
    python benchmarks/runtime_overhead.py --plot docs/runtime-throughput.png --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelengine.api.models import BackendName  # noqa: E402
from modelengine.api.targets import ResolvedTarget  # noqa: E402
from modelengine.backends.base import BuildOptions, Engine  # noqa: E402
from modelengine.runtime.ort_serving import ServingOnnxRuntimeBackend  # noqa: E402
from modelengine.store.manifest import EngineManifest, EngineTarget, TensorInfo  # noqa: E402
from modelengine.store.open import sha256_file  # noqa: E402
from modelengine.store.publish import utc_now  # noqa: E402

CONCURRENCY = (1, 8, 64)
MAX_BATCH = 64


# ---- models ------------------------------------------------------------------------------
def combinednet() -> Any:
    spec = importlib.util.spec_from_file_location("combinednet", ROOT / "examples/combinednet/combinednet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plain()


def resnet_style() -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.skip(x))

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        Block(32, 32, 1),
        Block(32, 64, 2),
        Block(64, 128, 2),
        Block(128, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


def wide_mlp() -> Any:
    """Weight-heavy (10M parameters): batch 1 is a memory-bound matrix-vector product per
    layer, batch 64 reuses each weight 64 times. The kind of model CPU batching pays for."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * 32 * 32, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 10),
    ).eval()


MODELS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "combinednet": (combinednet, (3, 32, 32)),
    "resnet-style": (resnet_style, (3, 64, 64)),
    "wide-mlp": (wide_mlp, (3, 32, 32)),
}


def build_engine(name: str, work: Path) -> tuple[Path, Engine, tuple[int, ...]]:
    """Export + ORT build + manifest.json; returns (manifest path, loaded engine, sample shape)."""
    import torch

    factory, sample = MODELS[name]
    model = factory()
    onnx = work / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, *sample),),
            str(onnx),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    backend = ServingOnnxRuntimeBackend(intra_op_threads=ort_threads())
    out = work / name
    result = backend.build(
        onnx, target=ResolvedTarget(BackendName.ONNXRUNTIME, None), options=BuildOptions(), out_dir=out
    )
    inputs = [
        TensorInfo(
            name="input",
            dtype="float32",
            shape=[-1, *sample],
            min=[1, *sample],
            opt=[1, *sample],
            max=[MAX_BATCH, *sample],
        )
    ]
    outputs = [TensorInfo(name=o.name, dtype=o.dtype, shape=o.shape) for o in result.outputs]
    manifest = EngineManifest(
        build_key=f"bench-{name}",
        model_digest="-",
        onnx_digest="-",
        backend=backend.name.value,
        backend_version=backend.version(),
        target=EngineTarget(),
        precision="fp32",
        inputs=inputs,
        outputs=outputs,
        engine_file=result.engine_path.name,
        sha256=sha256_file(result.engine_path),
        size=result.engine_path.stat().st_size,
        build_seconds=0.0,
        created=utc_now(),
    )
    path = out / "manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    engine = backend.load(result.engine_path, inputs=inputs, outputs=outputs)
    return path, engine, sample


# ---- measurement helpers -------------------------------------------------------------------
def ort_threads() -> int:
    """ONNX Runtime intra-op threads, the same in this process and in the server: the CPUs
    this process may run on (ORT's own default counts the host's cores, ignoring taskset)."""
    return int(os.environ.get("MODELENGINE_ORT_THREADS") or len(os.sched_getaffinity(0)))


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`modelengine serve --manifest` in its own process, like the sidecar in a pod."""

    def __init__(
        self,
        manifest: Path,
        *,
        batching: bool,
        max_delay_ms: float,
        instances: int,
        inline_max_ms: float | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        args = [
            sys.executable, "-m", "modelengine.cli", "serve", "--manifest", str(manifest),
            "--model-name", "model", "--host", "127.0.0.1", "--http-port", str(self.port),
            "--metrics-port", str(self.metrics_port), "--max-batch-size", str(MAX_BATCH),
            "--max-delay-ms", str(max_delay_ms), "--instances", str(instances),
        ]  # fmt: skip
        if not batching:
            args.append("--no-batching")
        if inline_max_ms is not None:
            args += ["--inline-max-ms", str(inline_max_ms)]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), MODELENGINE_ORT_THREADS=str(ort_threads()))
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_ready(self.port, self.proc)

    def _metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return text

    def mean_request_ms(self) -> float:
        """Mean time inside the server (body read to response ready), from its own metrics."""
        values = {}
        for line in self._metrics().splitlines():
            if line.startswith("modelengine_runtime_request_seconds_"):
                name, _, value = line.rpartition(" ")
                values[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
        return 1000.0 * values["sum"] / max(values["count"], 1.0)

    def batch_histogram(self) -> dict[str, float]:
        """The server's batch-size histogram so far: cumulative bucket counts ("le" -> n), sum, count."""
        out: dict[str, float] = {}
        for line in self._metrics().splitlines():
            if line.startswith("modelengine_runtime_batch_size_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[le] = float(line.rpartition(" ")[2])
            elif line.startswith(
                ("modelengine_runtime_batch_size_sum", "modelengine_runtime_batch_size_count")
            ):
                out[line.split("{")[0].rsplit("_", 1)[1]] = float(line.rpartition(" ")[2])
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _loads(raw: bytes) -> Any:
    try:
        import orjson
    except ImportError:  # pragma: no cover
        return json.loads(raw)
    return orjson.loads(raw)


_BARE_SERVER = """
import sys
from aiohttp import web
canned = open(sys.argv[2], "rb").read()
head = sys.argv[3]
async def infer(request):
    await request.read()
    return web.Response(body=canned, headers={"Inference-Header-Content-Length": head})
async def ready(request):
    return web.Response(text="ok")
app = web.Application(client_max_size=1 << 26)
app.router.add_post("/v2/models/model/infer", infer)
app.router.add_get("/v2/health/ready", ready)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


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
        [sys.executable, "-c", _BARE_SERVER, str(port), str(canned), str(hlen)], stderr=subprocess.PIPE
    )
    try:
        _wait_ready(port, proc)
        return http_latency(port, x, expected, binary=True, n=n)
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], path: str = "/v2/health/ready") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


_TRITON_SERVER = """
import sys
import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

engine, http_port, grpc_port, metrics_port, threads, delay_us, sample = sys.argv[1:8]
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
session = ort.InferenceSession(engine, opts, providers=["CPUExecutionProvider"])

@batch
def infer(input):
    return {"output": session.run(["output"], {"input": input})[0]}

config = TritonConfig(http_port=int(http_port), grpc_port=int(grpc_port), metrics_port=int(metrics_port))
with Triton(config=config) as triton:
    triton.bind(
        model_name="model",
        infer_func=infer,
        inputs=[Tensor(name="input", dtype=np.float32, shape=tuple(int(d) for d in sample.split(",")))],
        outputs=[Tensor(name="output", dtype=np.float32, shape=(-1,))],
        config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=int(delay_us))),
        strict=False,
    )
    triton.serve()
"""


class TritonServer:
    """The real Triton server (nvidia-pytriton's bundled tritonserver, Python backend calling
    the same ONNX Runtime engine file), in the interpreter given by --triton-python."""

    def __init__(self, python: str, engine_file: Path, sample: tuple[int, ...], max_delay_ms: float) -> None:
        self.port = free_port()
        libdir = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        args = [
            python, "-c", _TRITON_SERVER, str(engine_file), str(self.port), str(free_port()), str(free_port()),
            str(ort_threads()), str(int(max_delay_ms * 1000)), ",".join(map(str, sample)),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_ready(self.port, self.proc, "/v2/models/model/ready")  # the model loads after the server

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


async def _throughput(
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


@dataclass
class ModelResult:
    name: str
    direct: tuple[float, float] = (0.0, 0.0)
    floor: tuple[float, float] = (0.0, 0.0)  # bare aiohttp round trip, same bytes
    in_server_ms: float = 0.0  # mean time inside the server per request (its own metric)
    http_json: tuple[float, float] = (0.0, 0.0)
    http_binary: tuple[float, float] = (0.0, 0.0)
    ceiling: tuple[float, float] = (0.0, 0.0)  # in-process samples/s at batch 1, batch 64
    # server batch-size histogram over the 64-client phase with batching: le -> executions, sum, count
    batches_64: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, dict[int, float]] = field(default_factory=dict)  # mode -> clients -> rps
    p99_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    # server -> (format -> (req/s, p99 ms)) at 64 clients with dynamic batching; "triton" when run
    vs_triton: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


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
) -> ModelResult:
    print(f"[{name}] export + build", flush=True)
    manifest, engine, sample = build_engine(name, work)
    x = np.random.default_rng(0).standard_normal((1, *sample)).astype(np.float32)
    res = ModelResult(name)
    times, expected = direct_latency(engine, x, n)
    res.direct = percentiles(times)
    res.ceiling = engine_ceiling(engine, sample, min(seconds, 2.0))
    for mode, batching in (("off", False), ("on", True)):
        server = Server(
            manifest,
            batching=batching,
            max_delay_ms=max_delay_ms,
            instances=instances,
            inline_max_ms=inline_max_ms,
        )
        try:
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
                rps, p99 = asyncio.run(_throughput(server.port, x, clients, seconds))
                if before:
                    res.batches_64 = {k: v - before.get(k, 0.0) for k, v in server.batch_histogram().items()}
                res.throughput[mode][clients] = rps
                res.p99_ms[mode][clients] = p99
            if batching and triton_python:
                res.vs_triton["modelengine"] = _at_64(server.port, x, seconds)
        finally:
            server.stop()
    if triton_python:
        print(f"[{name}] the same against Triton (nvidia-pytriton)", flush=True)
        triton = TritonServer(triton_python, manifest.parent / engine_file_of(manifest), sample, max_delay_ms)
        try:
            res.vs_triton["triton"] = _at_64(triton.port, x, seconds)
        finally:
            triton.stop()
    engine.close()
    return res


def _at_64(port: int, x: np.ndarray, seconds: float) -> dict[str, tuple[float, float]]:
    return {
        "binary": asyncio.run(_throughput(port, x, 64, seconds, binary=True)),
        "json": asyncio.run(_throughput(port, x, 64, seconds, binary=False)),
    }


def engine_file_of(manifest: Path) -> str:
    return EngineManifest.model_validate_json(manifest.read_text()).engine_file


def report(results: list[ModelResult]) -> list[str]:
    lines = [
        "",
        "Latency, batch 1 (ms)            p50      p99   overhead p50: raw (HTTP - direct), "
        "beyond the bare-HTTP floor (HTTP - direct - floor)",
    ]
    fails: list[str] = []
    for r in results:
        lines.append(f"{r.name}")
        lines.append(f"  direct Engine.infer       {r.direct[0]:8.3f} {r.direct[1]:8.3f}")
        for label, (p50, p99) in (("HTTP binary", r.http_binary), ("HTTP JSON", r.http_json)):
            raw = p50 - r.direct[0]
            lines.append(
                f"  {label:<25} {p50:8.3f} {p99:8.3f}   raw {raw:+.3f}, beyond floor {raw - r.floor[0]:+.3f}"
            )
        lines.append(f"  {'bare aiohttp, no model':<25} {r.floor[0]:8.3f} {r.floor[1]:8.3f}   (the floor)")
        lines.append(f"  {'inside the server (mean)':<25} {r.in_server_ms:8.3f}")
        if r.http_binary[0] - r.direct[0] > 0.3:
            fails.append(f"{r.name}: binary HTTP overhead {r.http_binary[0] - r.direct[0]:.3f} ms > 0.3 ms")
    lines += ["", "Throughput, batch-1 requests (req/s) and client p99 (ms)"]
    lines.append(
        f"{'model':<14} {'clients':>7} {'batching off':>13} {'p99':>8} {'batching on':>12} {'p99':>8} {'gain':>6}"
    )
    for r in results:
        for c in CONCURRENCY:
            off, on = r.throughput["off"][c], r.throughput["on"][c]
            lines.append(
                f"{r.name:<14} {c:>7} {off:>13.0f} {r.p99_ms['off'][c]:>8.2f} {on:>12.0f} "
                f"{r.p99_ms['on'][c]:>8.2f} {on / off:>5.2f}x"
            )
        if r.batches_64:
            lines.append(f"{'':<14} 64 clients, batching on: {batch_summary(r.batches_64)}")
        b1, b64 = r.ceiling
        lines.append(
            f"{'':<14} engine alone, in-process: {b1:.0f}/s at batch 1, {b64:.0f}/s at batch {MAX_BATCH} "
            f"(batching can gain at most {b64 / b1:.2f}x)"
        )
        gain = r.throughput["on"][64] / r.throughput["off"][64]
        if gain < 3:
            fails.append(f"{r.name}: batching gain at 64 clients {gain:.2f}x < 3x")
    if any(r.vs_triton for r in results):
        lines += ["", "Against Triton at 64 clients, dynamic batching both (req/s, client p99 ms)"]
        lines.append(
            f"{'model':<14} {'format':>7} {'modelengine':>12} {'p99':>8} {'triton':>8} {'p99':>8} {'ratio':>6}"
        )
        for r in results:
            if "triton" not in r.vs_triton:
                continue
            for fmt in ("binary", "json"):
                (me, me99), (tr, tr99) = r.vs_triton["modelengine"][fmt], r.vs_triton["triton"][fmt]
                lines.append(
                    f"{r.name:<14} {fmt:>7} {me:>12.0f} {me99:>8.2f} {tr:>8.0f} {tr99:>8.2f} {me / tr:>5.2f}x"
                )
                if me < 1.5 * tr or me99 >= tr99:
                    fails.append(
                        f"{r.name} {fmt}: {me / tr:.2f}x Triton's throughput, p99 {me99:.1f} vs {tr99:.1f} ms"
                    )
    lines.append("")
    lines += [f"TARGET MISSED: {f}" for f in fails] or [
        "targets met: HTTP overhead <= 0.3 ms, batching >= 3x"
    ]
    return lines


def batch_summary(hist: dict[str, float]) -> str:
    """Executions, mean rows and the share of rows in batches of each size range."""
    count, rows = hist.get("count", 0.0), hist.get("sum", 0.0)
    if not count:
        return "no executions"
    bounds = sorted((float(k), v) for k, v in hist.items() if k not in ("sum", "count", "+Inf"))
    # rows per bucket are not exported; executions per bucket are: show their distribution
    parts, prev = [], 0.0
    for le, cum in bounds:
        if cum - prev > 0:
            parts.append(f"<={le:.0f}: {100 * (cum - prev) / count:.0f}%")
        prev = cum
    return f"{count:.0f} executions, {rows / count:.1f} rows each on average; executions by size {', '.join(parts)}"


def plot(results: list[ModelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        xs = np.arange(len(CONCURRENCY))
        ax.bar(xs - 0.2, [r.throughput["off"][c] for c in CONCURRENCY], 0.4, label="batching off")
        ax.bar(xs + 0.2, [r.throughput["on"][c] for c in CONCURRENCY], 0.4, label="dynamic batching")
        ax.axhline(
            r.ceiling[1], color="gray", linestyle="--", linewidth=1, label=f"engine alone, batch {MAX_BATCH}"
        )
        ax.axhline(r.ceiling[0], color="gray", linestyle=":", linewidth=1, label="engine alone, batch 1")
        ax.set_xticks(xs, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s (batch 1 each)")
        ax.set_title(f"{r.name}: modelengine serve, ONNX Runtime CPU")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
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
                )
            )
    print("\n".join(report(results)))
    print(
        f"\n(total {time.perf_counter() - started:.0f} s; {len(os.sched_getaffinity(0))} CPUs usable of "
        f"{os.cpu_count()}; ORT intra-op threads {ort_threads()}; python {sys.version.split()[0]})"
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
