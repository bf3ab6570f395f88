"""Where engines run: a lone request of a fast engine runs on the event loop (no thread
hand-off); the first run of a shape, every run with `inline_max_ms=0`, and runs under
concurrency use the inference threads, and batches still form with 64 clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import tritonclient.http as triton

from modelengine.backends.base import Backend, Engine
from modelengine.runtime.ort_serving import ServingOnnxRuntimeBackend
from modelengine.store.manifest import TensorInfo

from .conftest import Engines, Published
from .engines import release, release_entry
from .harness import ServerThread, metric_value
from .test_batching import CLIENTS, ROUNDS, _client


class _ThreadRecordingEngine(Engine):
    """The real ORT engine, noting the name of the thread each run happens on."""

    def __init__(self, inner: Engine, threads: list[str]) -> None:
        super().__init__(inner.inputs, inner.outputs)
        self._inner = inner
        self._threads = threads

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._threads.append(threading.current_thread().name)
        return self._inner.infer(feeds)

    def close(self) -> None:
        self._inner.close()


class _RecordingBackend(ServingOnnxRuntimeBackend):
    def __init__(self, threads: list[str]) -> None:
        super().__init__()
        self._seen = threads

    def _load_impl(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        return _ThreadRecordingEngine(
            super()._load_impl(engine_path, inputs=inputs, outputs=outputs), self._seen
        )


def _serve(
    published: Published, start: Callable[..., ServerThread], threads: list[str], **fields: object
) -> tuple[ServerThread, str]:
    release(published.store, [release_entry(published.store, published.a)])

    def factory(_name: str) -> Backend:
        return _RecordingBackend(threads)

    server = start(store_uri=published.uri, backend_factory=factory, **fields)
    server.wait_ready()

    async def loop_thread() -> str:
        return threading.current_thread().name

    threads.clear()  # the warm-up ran in the loader's thread
    return server, server.call(loop_thread())


def _sequential(server: ServerThread, engines: Engines, n: int) -> None:
    client = triton.InferenceServerClient(server.hostport)
    try:
        for i in range(n):
            x = np.full((1, 8), i / 10, np.float32)
            inp = triton.InferInput("x", [1, 8], "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            got = client.infer("mlp", [inp]).as_numpy("y")
            np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-5)
    finally:
        client.close()


def test_lone_requests_of_a_fast_engine_run_on_the_event_loop(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    threads: list[str] = []
    # a bound no run reaches, so the test does not depend on this machine's speed
    server, loop_thread = _serve(published, start, threads, inline_max_ms=10_000.0, batching=False)
    _sequential(server, engines, 6)
    assert len(threads) == 6
    assert threads[0].startswith("infer"), "the first run of a shape is timed on an inference thread"
    assert threads[1:] == [loop_thread] * 5


def test_inline_max_ms_zero_keeps_every_run_off_the_loop(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    threads: list[str] = []
    server, loop_thread = _serve(published, start, threads, inline_max_ms=0.0)
    _sequential(server, engines, 6)
    assert len(threads) == 6
    assert all(t.startswith("infer") for t in threads) and loop_thread not in threads


async def test_concurrent_requests_use_the_threads_and_still_batch(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    threads: list[str] = []
    server, loop_thread = await asyncio.to_thread(
        _serve, published, start, threads, inline_max_ms=10_000.0, max_delay_ms=5.0
    )
    await asyncio.to_thread(_sequential, server, engines, 3)  # the engine is now measured as fast
    done = await asyncio.gather(*(_client(server.hostport, c, engines.a.reference) for c in range(CLIENTS)))
    assert sum(done) == CLIENTS * ROUNDS
    text = await asyncio.to_thread(server.metrics)
    requests = metric_value(text, "modelengine_runtime_requests_total", outcome="success")
    executions = metric_value(text, "modelengine_runtime_batch_size_count")
    assert requests == CLIENTS * ROUNDS + 3
    assert executions < requests, "no requests were merged"
    assert any(t.startswith("infer") for t in threads[3:]), "concurrent runs stayed on the event loop"
    assert threads[1:3] == [loop_thread] * 2
