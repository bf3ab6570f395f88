"""Hot reload: a new release record mid-load switches engines with zero failed requests."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from modelengine.runtime.reload import ReleaseWatcher

from .conftest import Engines, Published
from .engines import release, release_entry
from .harness import ServerThread, http, metric_value

CLIENTS = 8


def test_release_change_switches_engine_under_load_without_failures(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)], generation=1)
    server = start(store_uri=published.uri, poll_seconds=0.05, max_delay_ms=1.0)
    server.wait_ready()
    url = server.url + "/v2/models/mlp/infer"
    stop = threading.Event()
    failures: list[str] = []
    answers: list[list[str]] = [[] for _ in range(CLIENTS)]

    def client(cid: int) -> None:
        x = np.full((1 + cid % 3, 8), cid / 4 - 1, np.float32)
        ref_a, ref_b = engines.a.reference(x), engines.b.reference(x)
        assert not np.allclose(ref_a, ref_b, atol=1e-3)  # the two engines answer recognisably
        body = json.dumps(
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
                ]
            }
        ).encode()
        deadline = time.monotonic() + 60  # bounded even if the switch never happens
        while not stop.is_set() and time.monotonic() < deadline:
            status, doc = http(url, body)
            if status != 200:
                failures.append(f"client {cid}: {status} {doc}")
                continue
            y = np.array(doc["outputs"][0]["data"], np.float32).reshape(x.shape[0], 4)
            if np.allclose(y, ref_a, rtol=1e-5, atol=1e-5):
                answers[cid].append("a")
            elif np.allclose(y, ref_b, rtol=1e-5, atol=1e-5):
                answers[cid].append("b")
            else:
                failures.append(f"client {cid}: answer matches neither engine")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        while min(len(a) for a in answers) < 5 and not failures:
            time.sleep(0.01)
        release(published.store, [release_entry(published.store, published.b)], generation=2)
        # keep sending until every client has had a few answers from the new engine
        limit = time.monotonic() + 30
        while time.monotonic() < limit and not all(a[-5:] == ["b"] * 5 for a in answers if a):
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(70)
    assert failures == []
    for seq in answers:
        assert seq[0] == "a" and seq[-1] == "b"
        switched = seq.index("b")
        assert all(s == "b" for s in seq[switched:]), "an old-engine answer after the new one"
    text = server.metrics()
    assert metric_value(text, "modelengine_runtime_engine_switches_total", outcome="loaded") == 2
    assert metric_value(text, "modelengine_runtime_engine_info", build_key=published.b.build_key) == 1
    assert metric_value(text, "modelengine_runtime_engine_info", build_key=published.a.build_key) == 0
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="server_error") == 0
    status, doc = server.get("/v2/health/ready")
    assert status == 200 and doc["engine"]["build_key"] == published.b.build_key
    assert doc["release_generation"] == 2


def test_unchanged_release_does_not_reload(published: Published, start: Callable[..., ServerThread]) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, poll_seconds=0.02)
    server.wait_ready()
    watcher = server.server.source
    assert isinstance(watcher, ReleaseWatcher)
    for _ in range(5):
        server.call(watcher.refresh())
    # a rewrite with a new generation but the same engine keeps the loaded one
    release(published.store, [release_entry(published.store, published.a)], generation=7)
    server.call(watcher.refresh())
    assert watcher.loads == 1
    assert server.get("/v2/health/ready")[1]["release_generation"] == 7


def test_bad_new_release_keeps_the_current_engine_serving(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)], generation=1)
    server = start(store_uri=published.uri, poll_seconds=0)  # refreshed by hand below
    server.wait_ready()
    watcher = server.server.source
    assert isinstance(watcher, ReleaseWatcher)
    x = np.ones((1, 8), np.float32)
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]}
    ).encode()

    def answer() -> np.ndarray:
        status, doc = http(server.url + "/v2/models/mlp/infer", body)
        assert status == 200, doc
        return np.array(doc["outputs"][0]["data"], np.float32).reshape(1, 4)

    # 1. the new engine's bytes do not match its sha256: load fails, engine a keeps serving
    entry_b = release_entry(published.store, published.b).model_copy(update={"sha256": "0" * 64})
    release(published.store, [entry_b], generation=2)
    server.call(watcher.refresh())
    np.testing.assert_allclose(answer(), engines.a.reference(x), rtol=1e-5, atol=1e-6)
    status, doc = server.get("/v2/health/ready")
    assert status == 200 and doc["engine"]["build_key"] == published.a.build_key
    # 2. the new release has no engine for this machine (GPU only): a keeps serving
    gpu_only = release_entry(published.store, published.b).model_copy(
        update={"backend": "tensorrt", "compute_capability": "9.0", "target": "tensorrt-cc9.0"}
    )
    release(published.store, [gpu_only], generation=3)
    server.call(watcher.refresh())
    np.testing.assert_allclose(answer(), engines.a.reference(x), rtol=1e-5, atol=1e-6)
    assert server.get("/v2/health/ready")[0] == 200
    # 3. a good release switches
    release(published.store, [release_entry(published.store, published.b)], generation=4)
    server.call(watcher.refresh())
    np.testing.assert_allclose(answer(), engines.b.reference(x), rtol=1e-5, atol=1e-6)
    text = server.metrics()
    assert metric_value(text, "modelengine_runtime_engine_switches_total", outcome="failed") == 1
    assert metric_value(text, "modelengine_runtime_engine_switches_total", outcome="loaded") == 2


def test_tampered_release_while_serving_keeps_the_engine_and_says_why_once(
    published: Published, start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    release(published.store, [release_entry(published.store, published.a)], generation=1)
    server = start(store_uri=published.uri, poll_seconds=0.05)
    server.wait_ready()
    doc = json.loads(published.store.get_bytes("releases/default/mlp.json"))
    doc["engines"][0]["build_key"] = "../../../../tmp/x/.ssh"
    with caplog.at_level(logging.ERROR):
        published.store.put_bytes("releases/default/mlp.json", json.dumps(doc).encode())
        time.sleep(0.5)  # about ten polls
    refusals = [r.getMessage() for r in caplog.records if "is refused" in r.getMessage()]
    assert refusals == [
        f"keeping the current engine: release record {published.uri}/releases/default/mlp.json is refused: "
        "engines[0].build_key: not a build key (32 to 64 hex digits): '../../../../tmp/x/.ssh'"
    ]
    ok, _ = http(server.url + "/v2/models/mlp/infer", json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    ).encode())  # fmt: skip
    assert ok == 200 and server.server.ready
