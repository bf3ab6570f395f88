"""Prometheus metrics of the operator, on their own registry (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "modelengine_reconciles", "ModelEngine reconciliations", ["result"], registry=r
        )
        self.builds_started = Counter(
            "modelengine_builds_started", "Builder Jobs created", ["target"], registry=r
        )
        self.builds_succeeded = Counter(
            "modelengine_builds_succeeded", "Builder Jobs that published an engine", ["target"], registry=r
        )
        self.builds_failed = Counter(
            "modelengine_builds_failed", "Builder Jobs that failed", ["target"], registry=r
        )
        self.build_duration = Histogram(
            "modelengine_build_duration_seconds",
            "Engine build time reported by the builder",
            ["target"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=r,
        )
        self.cache_hits = Counter(
            "modelengine_cache_hits", "Targets found already built in the store", registry=r
        )
        self.queue_length = Gauge(
            "modelengine_build_queue_length", "Targets waiting for a build slot", registry=r
        )
        self.jobs_in_flight = Gauge("modelengine_jobs_in_flight", "Builder Jobs running", registry=r)
        self.job_watch_restarts = Counter(
            "modelengine_job_watch_restarts",
            "Builder Job watch restarts other than the server's routine timeout",
            ["reason"],
            registry=r,
        )
        self.kinds_without_engine = Gauge(
            "modelengine_gpu_kinds_without_engine",
            "GPU kinds among the Nodes a served ModelEngine has no engine for (no pods there)",
            ["namespace", "modelengine"],
            registry=r,
        )

    def reconciled(self, *, ok: bool) -> None:
        self.reconciles.labels(result="ok" if ok else "retry").inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        got = self.registry.get_sample_value(name, labels or {})
        return float(got or 0.0)
