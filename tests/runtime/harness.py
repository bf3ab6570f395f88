"""A runtime server on its own event loop thread, so blocking clients (tritonclient.http,
urllib) can talk to it from the test's thread over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine
from typing import Any, TypeVar

from modelengine.runtime.server import RunningServer, ServerConfig, start_server

T = TypeVar("T")


class ServerThread:
    def __init__(self, config: ServerConfig) -> None:
        config.host = "127.0.0.1"
        config.http_port = 0
        config.metrics_port = 0
        # gRPC only where a test asks for it (grpc_port=0: any free port); never the fixed 8001
        config.grpc_port = 0 if config.grpc_port == 0 else None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: RunningServer = self.call(start_server(config))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def hostport(self) -> str:
        return self.server.url.removeprefix("http://")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.call(self.server.wait_ready(timeout), timeout + 5)

    def stop(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return http(self.url + path)

    def metrics(self) -> str:
        assert self.server.metrics_url
        with urllib.request.urlopen(self.server.metrics_url, timeout=10) as resp:
            return str(resp.read().decode())


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """GET (or POST with `body`); returns (status, parsed JSON body)."""
    req = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else {}


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_part = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_part for k, v in labels.items()):
            total += float(value)
    return total
