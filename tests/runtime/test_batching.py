"""Dynamic batching: 64 concurrent clients get their own, correct answers; batches form;
requests of different shapes are never merged; shutdown finishes queued requests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.http.aio as triton_aio

from modelengine.runtime.batching import Batcher

from .conftest import Engines, Published
from .engines import release, release_entry
from .harness import ServerThread, http, metric_value

CLIENTS = 64
ROUNDS = 4


async def _client(url: str, cid: int, reference: Callable[[np.ndarray], np.ndarray]) -> int:
    client = triton_aio.InferenceServerClient(url)
    try:
        for r in range(ROUNDS):
            rows = 1 + (cid + r) % 3
            # distinct per client and round: any mix-up of rows between requests shows
            x = np.full((rows, 8), cid / CLIENTS, np.float32) + np.arange(8, dtype=np.float32) * (r + 1) / 10
            x[:, 0] = -cid - r / 10
            inp = triton_aio.InferInput("x", [rows, 8], "FP32")
            inp.set_data_from_numpy(x, binary_data=(cid % 2 == 0))
            out = triton_aio.InferRequestedOutput("y", binary_data=(cid % 3 != 0))
            result = await client.infer("mlp", [inp], outputs=[out])
            got = result.as_numpy("y")
            assert got is not None and got.shape == (rows, 4)
            np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-5)
        return ROUNDS
    finally:
        await client.close()


async def test_64_concurrent_clients_get_their_own_results_in_batches(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, max_delay_ms=5.0, instances=2)
    await asyncio.to_thread(server.wait_ready)
    done = await asyncio.gather(*(_client(server.hostport, c, engines.a.reference) for c in range(CLIENTS)))
    assert sum(done) == CLIENTS * ROUNDS
    text = await asyncio.to_thread(server.metrics)
    requests = metric_value(text, "modelengine_runtime_requests_total", outcome="success")
    executions = metric_value(text, "modelengine_runtime_batch_size_count")
    rows = metric_value(text, "modelengine_runtime_batch_size_sum")
    single = metric_value(text, "modelengine_runtime_batch_size_bucket", le="1.0")
    assert requests == CLIENTS * ROUNDS
    assert executions < requests, "no requests were merged"
    assert single < executions, "every execution ran a single row"
    assert rows / executions > 2
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="server_error") == 0
    # The HPA's `inflight` metric: back to zero once every request has been answered.
    assert "modelengine_runtime_inflight_requests{" in text
    assert metric_value(text, "modelengine_runtime_inflight_requests") == 0


async def test_requests_of_different_shapes_are_never_merged() -> None:
    seen: list[tuple[int, ...]] = []
    gate = asyncio.Event()

    async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        await gate.wait()
        seen.append(tuple(feeds["x"].shape))
        return {"y": feeds["x"] * 2}

    batcher = Batcher(run, max_batch=64, max_delay_s=0.05, instances=1)
    shapes = [(1, 3), (2, 5), (1, 3), (1, 5), (3, 3)]
    tasks = [
        asyncio.ensure_future(batcher.submit({"x": np.full(s, i, np.float32)})) for i, s in enumerate(shapes)
    ]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    for i, (shape, (out, _queued)) in enumerate(zip(shapes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], np.full(shape, 2 * i, np.float32))
    assert sorted(seen) == [(3, 5), (5, 3)]
    await batcher.close()


async def test_batch_is_capped_at_max_batch() -> None:
    sizes: list[int] = []

    async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(int(feeds["x"].shape[0]))
        await asyncio.sleep(0)
        return {"y": feeds["x"] + 1}

    batcher = Batcher(run, max_batch=4, max_delay_s=0.01, instances=1)
    outs = await asyncio.gather(
        *(batcher.submit({"x": np.full((3 if i % 2 else 1, 2), i, np.int64)}) for i in range(10))
    )
    for i, (out, _q) in enumerate(outs):
        assert (out["y"] == i + 1).all() and out["y"].shape[0] == (3 if i % 2 else 1)
    assert max(sizes) <= 4 and sum(sizes) == 20
    await batcher.close()


def test_graceful_shutdown_finishes_in_flight_requests(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, instances=1)
    server.wait_ready()
    # Hold the single inference thread busy so requests stay in flight deterministically.
    held = threading.Event()
    blocker = server.server.plane.pool.submit(held.wait, 30)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]})
    url = server.url + "/v2/models/mlp/infer"
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(http, url, body.encode()) for _ in range(8)]

        async def pending() -> int:
            active = server.server.plane.active
            assert active is not None and active.batcher is not None
            return active.batcher.pending

        while server.call(pending()) < 8:
            threading.Event().wait(0.01)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)
        while server.server.plane.ready()[0]:
            threading.Event().wait(0.01)
        assert not stopping.done()  # waiting for the 8 requests
        held.set()
        stopping.result(30)
        statuses = [f.result(timeout=30)[0] for f in futures]
    blocker.result(5)
    assert statuses == [200] * 8
    try:
        status, _ = http(server.url + "/v2/health/live")
    except OSError:
        status = -1
    assert status == -1, "server still accepts connections after stop"
