"""Fixtures: two real ORT engines (same MLP architecture, different weights) built once
per session, and a file:// store per test with both published."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelengine.runtime.accelerator import CPU_ONLY
from modelengine.runtime.server import ServerConfig
from modelengine.store.base import ObjectStore
from modelengine.store.manifest import EngineManifest
from modelengine.store.open import open_store

from .engines import BuiltEngine, build_ort, export_mlp, publish, release, release_entry
from .harness import ServerThread


@dataclass
class Engines:
    a: BuiltEngine
    b: BuiltEngine


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Engines:
    root = tmp_path_factory.mktemp("runtime-engines")
    built = []
    for seed, label in ((1, "a"), (2, "b")):
        onnx = export_mlp(root / f"mlp-{label}.onnx", seed)
        built.append(build_ort(onnx, root / f"engine-{label}"))
    return Engines(*built)


@dataclass
class Published:
    store: ObjectStore
    uri: str
    a: EngineManifest
    b: EngineManifest


@pytest.fixture
def published(engines: Engines, tmp_path: Path) -> Iterator[Published]:
    uri = (tmp_path / "store").as_uri()
    store = open_store(uri)
    yield Published(store, uri, publish(store, engines.a.engine), publish(store, engines.b.engine))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start runtime servers (stopped at teardown): start(store_uri=..., **ServerConfig fields)."""
    running: list[ServerThread] = []

    def make(**fields: Any) -> ServerThread:
        fields.setdefault("namespace", "default")
        fields.setdefault("name", "mlp")
        fields.setdefault("accelerator", CPU_ONLY)
        fields.setdefault("cache_dir", tmp_path / "cache")
        fields.setdefault("poll_seconds", 0.2)
        server = ServerThread(ServerConfig(**fields))
        running.append(server)
        return server

    yield make
    for server in running:
        server.stop()


@pytest.fixture
def served(published: Published, start: Callable[..., ServerThread]) -> ServerThread:
    """A ready server for the release of engine `a` (batching on)."""
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri)
    server.wait_ready()
    return server
