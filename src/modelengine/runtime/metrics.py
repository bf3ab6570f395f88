"""Prometheus metrics of one runtime, in a registry of its own.

A private `CollectorRegistry` per server keeps several servers in one process (tests, the
in-process demo) from colliding; the metrics app on port 8002 renders exactly this one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelengine.runtime.loader import EngineInfo

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelengine_runtime_requests",
            "Inference requests by model and outcome (success, client_error, server_error, not_ready).",
            ["model", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "modelengine_runtime_request_seconds",
            "Inference request latency from body received to response ready.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "modelengine_runtime_queue_seconds",
            "Time a request waited for its batch to start.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelengine_runtime_batch_size",
            "Rows per engine execution (dynamic batching merges requests).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            "modelengine_runtime_engine_load_seconds",
            "Seconds the current engine took to load and warm up.",
            ["model"],
            registry=r,
        )
        self.engine_info = Gauge(
            "modelengine_runtime_engine_info",
            "The engine being served (value 1), labelled with its backend, version, target and build key.",
            ["model", "backend", "backend_version", "target", "build_key"],
            registry=r,
        )
        self.inflight = Gauge(
            "modelengine_runtime_inflight_requests",
            "Inference requests being served right now (the HPA's `inflight` metric).",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "modelengine_runtime_ready", "1 when an engine is loaded and warmed up.", registry=r
        )
        self.reloads = Counter(
            "modelengine_runtime_engine_switches",
            "Engine switches by outcome (loaded, failed).",
            ["outcome"],
            registry=r,
        )

    def engine_loaded(self, model: str, info: EngineInfo, seconds: float) -> None:
        self.engine_info.clear()
        self.engine_info.labels(model, info.backend, info.backend_version, info.target, info.build_key).set(1)
        self.load_seconds.labels(model).set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
