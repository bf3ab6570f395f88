"""The servers measured, each in its own process as in a pod: `modelengine serve`, a bare
aiohttp handler answering canned bytes (the floor of HTTP itself), and the real Triton
server (nvidia-pytriton) running the same ONNX Runtime engine file. Both model servers
also listen for KServe v2 gRPC (`.grpc_port`).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import MAX_BATCH, ROOT


def ort_threads() -> int:
    """ONNX Runtime intra-op threads, the same in this process and in the server: the CPUs
    this process may run on (ORT's own default counts the host's cores, ignoring taskset)."""
    return int(os.environ.get("MODELENGINE_ORT_THREADS") or len(os.sched_getaffinity(0)))


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
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        args = [
            sys.executable, "-m", "modelengine.cli", "serve", "--manifest", str(manifest),
            "--model-name", "model", "--host", "127.0.0.1", "--http-port", str(self.port),
            "--metrics-port", str(self.metrics_port), "--grpc-port", str(self.grpc_port),
            "--max-batch-size", str(MAX_BATCH),
            "--max-delay-ms", str(max_delay_ms), "--instances", str(instances),
        ]  # fmt: skip
        if not batching:
            args.append("--no-batching")
        if inline_max_ms is not None:
            args += ["--inline-max-ms", str(inline_max_ms)]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), MODELENGINE_ORT_THREADS=str(ort_threads()))
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_ready(self.port, self.proc)

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


BARE_SERVER = """
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


def wait_ready(port: int, proc: subprocess.Popen[bytes], path: str = "/v2/health/ready") -> None:
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
        self.grpc_port = free_port()
        libdir = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        args = [
            python, "-c", _TRITON_SERVER, str(engine_file), str(self.port), str(self.grpc_port), str(free_port()),
            str(ort_threads()), str(int(max_delay_ms * 1000)), ",".join(map(str, sample)),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_ready(self.port, self.proc, "/v2/models/model/ready")  # the model loads after the server

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
