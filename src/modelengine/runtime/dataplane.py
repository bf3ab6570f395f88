"""The data plane: the one object every HTTP and gRPC handler talks to.

It owns the served model (a loaded engine, its batcher, its in-flight count), readiness
and its reason, the inference thread pool and the metrics. Handlers are thin adapters
that pass bytes in and out; everything the protocol means happens here or in `protocol`.

Hot swap without failing a request: `install()` replaces the active `ServedModel` in one
assignment on the event loop; a request takes a reference to the active model and enters
it (a counter) before its first `await`, so it always finishes on the engine it started
on. The old model is closed only once its in-flight count drops to zero.

Inference runs in a small pool (`instances` workers; ONNX Runtime's `run` is thread-safe
and releases the GIL) while the loop keeps accepting and batching requests. One exception,
bounded: a request runs on the event loop itself when it is the only request on the model
and runs of its input shape have measured (moving average) at most `inline_max_ms`. The
hop to a worker thread and back costs two thread wake-ups (≈ 0.1 ms on 2 cores), a large
share of a small engine's request; inline, the loop is blocked for one such run at most,
only while nothing else was in flight, and any request arriving meanwhile waits that long
and then takes the pool (no longer alone). Under concurrency every run uses the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from modelengine import __version__
from modelengine.runtime.batching import Batcher, BatcherClosed
from modelengine.runtime.errors import BadRequest, ModelNotFound, NotReady, ServeError, to_http
from modelengine.runtime.loader import LoadedEngine
from modelengine.runtime.metrics import RuntimeMetrics
from modelengine.runtime.protocol import (
    DEFAULT_MAX_TENSOR_BYTES,
    InferRequest,
    encode_response,
    parse_request,
    v2_datatype,
)
from modelengine.store.manifest import TensorInfo

log = logging.getLogger(__name__)

MODEL_VERSION = "1"

T = TypeVar("T")


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    instances: int = 2
    inline_max_ms: float = 1.0  # 0: never run on the event loop


_EWMA = 0.2  # weight of the newest run in the moving average of run times
_SHAPES_KEPT = 256  # run-time averages kept (one per input shape)


class ServedModel:
    """One loaded engine being served; counts the requests running on it."""

    def __init__(
        self,
        loaded: LoadedEngine,
        *,
        pool: ThreadPoolExecutor,
        batching: BatchingConfig,
        metrics: RuntimeMetrics,
        model_name: str,
    ) -> None:
        self.loaded = loaded
        self.engine = loaded.engine
        self.info = loaded.info
        self._pool = pool
        self._inflight = 0
        self._inline_max_s = batching.inline_max_ms / 1000.0
        self._run_seconds: dict[tuple[tuple[int, ...], ...], float] = {}  # input shapes -> average
        self._idle = asyncio.Event()
        self._idle.set()
        self.output_names = [o.name for o in self.engine.outputs]
        splittable = self.engine.batch_dynamic and all(
            o.shape and o.shape[0] == -1 for o in self.engine.outputs
        )
        self.max_batch = min(batching.max_batch_size, self.engine.max_batch)
        self.batcher: Batcher | None = None
        if batching.enabled and splittable and self.max_batch > 1:
            batch_metric = metrics.batch_size.labels(model_name)
            self.batcher = Batcher(
                self._run,
                max_batch=self.max_batch,
                max_delay_s=batching.max_delay_ms / 1000.0,
                instances=batching.instances,
                on_batch=batch_metric.observe,
            )
        self._batch_metric = metrics.batch_size.labels(model_name)

    async def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._inflight > 1:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.infer, feeds)
        # Alone on the model: time the run (its average decides whether the next lone run of
        # this shape may stay on the loop).
        key = tuple(a.shape for a in feeds.values())
        average = self._run_seconds.get(key)
        if average is not None and average <= self._inline_max_s:
            # One turn of the loop first: requests already read run up to their own engine
            # call and count themselves in, so under load nothing runs inline (and batches form).
            await asyncio.sleep(0)
            if self._inflight == 1:
                return self._timed(key, feeds)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, key, feeds)

    def _timed(
        self, key: tuple[tuple[int, ...], ...], feeds: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.engine.infer(feeds)
        seconds = time.perf_counter() - start
        average = self._run_seconds.get(key)
        if average is None and len(self._run_seconds) >= _SHAPES_KEPT:
            self._run_seconds.clear()
        self._run_seconds[key] = seconds if average is None else average + _EWMA * (seconds - average)
        return out

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Caller must hold `enter()`; returns (outputs, queue seconds)."""
        self.engine.check_inputs(feeds)
        if self.batcher is not None:
            return await self.batcher.submit(feeds)
        self._batch_metric.observe(next(iter(feeds.values())).shape[0] if feeds else 1)
        return await self._run(feeds), 0.0

    def enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def exit(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def close(self) -> None:
        """Wait for the requests on this engine to finish, then free it."""
        await self._idle.wait()
        if self.batcher is not None:
            await self.batcher.close()
        await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.close)


def _tensor_meta(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": list(t.shape)}


class DataPlane:
    def __init__(
        self,
        *,
        model_name: str,
        batching: BatchingConfig,
        metrics: RuntimeMetrics | None = None,
        max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    ) -> None:
        self.model_name = model_name
        self.batching = batching
        self.max_tensor_bytes = max_tensor_bytes
        self.metrics = metrics or RuntimeMetrics()
        self._inflight_metric = self.metrics.inflight.labels(model_name)
        self._pool = ThreadPoolExecutor(max_workers=max(1, batching.instances), thread_name_prefix="infer")
        self._active: ServedModel | None = None
        self._reason = "no engine loaded yet"
        self._detail: dict[str, Any] = {}
        self._closing = False
        self._retiring: set[asyncio.Task[None]] = set()
        # labelled children resolved once: .labels() per request is measurable on the hot path
        m = self.metrics
        self._outcomes = {
            o: m.requests.labels(model_name, o)
            for o in ("success", "client_error", "server_error", "not_ready")
        }
        self._latency_metric = m.latency.labels(model_name)
        self._queue_metric = m.queue.labels(model_name)

    # ---- state -------------------------------------------------------------------------
    @property
    def pool(self) -> ThreadPoolExecutor:
        """The inference threads (`instances` of them)."""
        return self._pool

    @property
    def active(self) -> ServedModel | None:
        return self._active

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self._active is not None and not self._closing
        doc: dict[str, Any] = {"ready": ok, "model": self.model_name, **self._detail}
        if self._active is not None:
            doc["engine"] = {
                "target": self._active.info.target,
                "backend": self._active.info.backend,
                "backend_version": self._active.info.backend_version,
                "build_key": self._active.info.build_key,
            }
        if not ok:
            doc["reason"] = "shutting down" if self._closing else self._reason
        return ok, doc

    def set_detail(self, **detail: Any) -> None:
        self._detail.update(detail)

    def set_not_ready(self, reason: str) -> None:
        """Record why no engine is served (kept while an engine is, as the last problem)."""
        self._reason = reason
        if self._active is None:
            log.warning("not ready: %s", reason)
            self.metrics.ready.set(0)

    async def install(self, loaded: LoadedEngine) -> None:
        """Serve `loaded` from now on; the previous engine is freed after its requests finish."""
        new = ServedModel(
            loaded, pool=self._pool, batching=self.batching, metrics=self.metrics, model_name=self.model_name
        )
        old, self._active = self._active, new
        self._reason = ""
        self.metrics.engine_loaded(self.model_name, loaded.info, loaded.load_seconds)
        self.metrics.ready.set(1)
        log.info(
            "serving %s (%s %s, build key %s), loaded and warmed up in %.2fs",
            loaded.info.target,
            loaded.info.backend,
            loaded.info.backend_version,
            loaded.info.build_key,
            loaded.load_seconds,
        )
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def begin_shutdown(self) -> None:
        self._closing = True
        self.metrics.ready.set(0)

    async def close(self) -> None:
        self.begin_shutdown()
        active, self._active = self._active, None
        if active is not None:
            await active.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._pool.shutdown(wait=True)

    # ---- metadata ----------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelengine", "version": __version__, "extensions": ["binary_tensor_data"]}

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.model_name:
            raise ModelNotFound(f"model {name!r} is not served here (serving {self.model_name!r})")
        if version not in (None, "", MODEL_VERSION):
            raise ModelNotFound(f"model {name!r} has no version {version!r} (versions: {MODEL_VERSION})")

    def _served(self) -> ServedModel:
        if self._closing:
            raise NotReady("the server is shutting down")
        if self._active is None:
            raise NotReady(f"model {self.model_name!r} is not ready: {self._reason}")
        return self._active

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._check_model(name, version)
        served = self._served()
        return {
            "name": self.model_name,
            "versions": [MODEL_VERSION],
            "platform": f"modelengine_{served.info.backend}",
            "inputs": [_tensor_meta(t) for t in served.engine.inputs],
            "outputs": [_tensor_meta(t) for t in served.engine.outputs],
        }

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._check_model(name, version)
        served = self._served()

        def dims(t: TensorInfo) -> list[int]:
            return list(t.shape[1:] if served.batcher is not None else t.shape)

        return {
            "name": self.model_name,
            "platform": f"modelengine_{served.info.backend}",
            "max_batch_size": served.max_batch if served.batcher is not None else 0,
            "input": [
                {"name": t.name, "data_type": "TYPE_" + v2_datatype(t.dtype), "dims": dims(t)}
                for t in served.engine.inputs
            ],
            "output": [
                {"name": t.name, "data_type": "TYPE_" + v2_datatype(t.dtype), "dims": dims(t)}
                for t in served.engine.outputs
            ],
            "dynamic_batching": {"max_queue_delay_microseconds": int(self.batching.max_delay_ms * 1000)}
            if served.batcher is not None
            else None,
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._check_model(name, version)
        return self._active is not None and not self._closing

    # ---- inference ---------------------------------------------------------------------
    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None
    ) -> tuple[bytes, int | None]:
        """One v2 HTTP infer call: body in, (response body, binary header length or None) out."""

        def decode() -> InferRequest:
            return parse_request(body, header_length, max_tensor_bytes=self.max_tensor_bytes)

        def encode(
            request: InferRequest, picked: list[tuple[str, np.ndarray, bool]]
        ) -> tuple[bytes, int | None]:
            return encode_response(
                model_name=self.model_name, model_version=MODEL_VERSION, request_id=request.id, outputs=picked
            )

        return await self.run_inference(name, version, decode, encode)

    async def run_inference(
        self,
        name: str,
        version: str | None,
        decode: Callable[[], InferRequest],
        encode: Callable[[InferRequest, list[tuple[str, np.ndarray, bool]]], T],
    ) -> T:
        """One infer call in any wire format (HTTP JSON/binary, gRPC): `decode` turns the
        request into tensors (raising `BadRequest`), `encode` the picked outputs into the
        answer; model checks, validation, batching, hot swap and metrics are the same for all."""
        start = time.perf_counter()
        outcome = "server_error"
        try:
            self._check_model(name, version)
            served = self._served()
            served.enter()
            self._inflight_metric.inc()
            try:
                request = decode()
                for want in request.outputs or []:
                    if want.name not in served.output_names:
                        raise BadRequest(
                            f"unknown output {want.name!r} (outputs: {', '.join(served.output_names)})"
                        )
                try:
                    outputs, queued = await served.infer(request.inputs)
                except BatcherClosed as err:
                    raise NotReady(str(err)) from None
            finally:
                served.exit()
                self._inflight_metric.dec()
            if request.outputs is None:
                picked = [(n, outputs[n], request.binary_output) for n in served.output_names]
            else:
                picked = [(w.name, outputs[w.name], w.binary) for w in request.outputs]
            result = encode(request, picked)
            self._queue_metric.observe(queued)
            outcome = "success"
            return result
        except BaseException as err:
            status, _ = to_http(err) if isinstance(err, Exception) else (500, "")
            outcome = "not_ready" if status == 503 else "client_error" if status < 500 else "server_error"
            if status >= 500 and isinstance(err, Exception) and not isinstance(err, ServeError):
                log.error("inference failed", exc_info=err)
            raise
        finally:
            self._outcomes[outcome].inc()
            self._latency_metric.observe(time.perf_counter() - start)
