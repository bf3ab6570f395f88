"""`modelengine serve` as a process: serves a local engine, exits 0 on SIGTERM after
finishing, and refuses bad flags with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Published
from .harness import http

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "modelengine.cli", "serve", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_local_engine_and_stop_on_sigterm(published: Published, tmp_path: Path) -> None:
    engine_dir = Path(published.uri.removeprefix("file://")) / "engines" / published.a.build_key
    port, mport = _port(), _port()
    proc = _serve(
        "--engine-dir", str(engine_dir), "--model-name", "mlp", "--host", "127.0.0.1",
        "--http-port", str(port), "--metrics-port", str(mport), "--grpc-port", "0", "--no-batching",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = http(f"http://127.0.0.1:{port}/v2/health/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, proc.stdout.read() if proc.poll() is not None and proc.stdout else "not ready"
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.25] * 8}]}
        code, doc = http(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json.dumps(body).encode())
        assert code == 200 and doc["outputs"][0]["shape"] == [1, 4]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "shutting down" in out


def test_serve_without_a_source_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _serve("--http-port", "0", cwd=tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out.strip().splitlines() == [
        "modelengine serve: error: give --store with --namespace and --name, or --manifest/--engine-dir"
    ]
