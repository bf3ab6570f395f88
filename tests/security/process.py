"""`modelengine serve` as a real process on free loopback ports, for the attack tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`modelengine [-v...] serve ARGS` with stdout and stderr captured to files."""

    def __init__(self, *args: str, cwd: Path, verbosity: int = 0, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.stdout_path = cwd / "serve.stdout"
        self.stderr_path = cwd / "serve.stderr"
        flags = ["-" + "v" * verbosity] if verbosity else []
        command = [sys.executable, "-m", "modelengine.cli", *flags, "serve", *args, "--host", "127.0.0.1"]
        command += ["--http-port", str(self.port), "--metrics-port", str(self.metrics_port)]
        command += ["--grpc-port", "0"]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                stdout=out,
                stderr=err,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def wait_for(self, path: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Poll `path` until `predicate(status, doc)` holds; fails with the last answer."""
        deadline = time.monotonic() + timeout
        last: tuple[int, dict[str, Any]] = (0, {})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.output()}")
            try:
                last = self.get(path)
            except OSError:
                time.sleep(0.1)
                continue
            if predicate(*last):
                return last[1]
            time.sleep(0.1)
        raise AssertionError(f"{path} never matched; last answer {last}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")
