"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request latency, encode and search time, batch sizes, writes and document count."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "embedkd_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "embedkd_encode_seconds",
            "time of one encoder forward pass",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "embedkd_encode_batch_size",
            "texts per student forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "embedkd_search_seconds",
            "index search time per request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.writes = Counter("embedkd_writes_total", "acknowledged writes", ["op"], registry=self.registry)
        self.documents = Gauge("embedkd_documents", "documents in the store", registry=self.registry)
        self.monitor: MonitorMetrics | None = None

    def enable_monitor(self) -> MonitorMetrics:
        """Register the alignment monitor's metrics (only on services that run it)."""
        self.monitor = MonitorMetrics(self.registry)
        return self.monitor

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.encode_seconds.labels("query").observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


SHARE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


class MonitorMetrics:
    """The alignment monitor's figures: rolling gauges (set at scrape time), per-sample histograms."""

    GAUGES = {
        "mean_cosine": ("embedkd_monitor_cosine", "rolling mean student-teacher cosine of sampled queries"),
        "top10_overlap": ("embedkd_monitor_top10_overlap", "rolling mean top-10 overlap on the live index"),
        "cosine_trend": (
            "embedkd_monitor_cosine_trend",
            "newer half minus older half of the window (cosine)",
        ),
        "degraded": ("embedkd_monitor_degraded", "1 when the rolling cosine is below --monitor-alert"),
        "samples": ("embedkd_monitor_window_samples", "samples in the rolling window"),
        "queued": ("embedkd_monitor_queue_size", "samples waiting for the teacher"),
    }

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauges = {key: Gauge(name, doc, registry=registry) for key, (name, doc) in self.GAUGES.items()}
        self.sampled = Counter("embedkd_monitor_sampled_total", "queries sampled", registry=registry)
        self.skipped = Counter(
            "embedkd_monitor_skipped_total",
            "samples not measured: dropped (queue full), over_budget, stale (student swapped), errors",
            ["reason"],
            registry=registry,
        )
        self.cosine = Histogram(
            "embedkd_monitor_sample_cosine",
            "student-teacher cosine per sample",
            buckets=SHARE_BUCKETS,
            registry=registry,
        )
        self.overlap = Histogram(
            "embedkd_monitor_sample_top10_overlap",
            "top-10 overlap per sample",
            buckets=SHARE_BUCKETS,
            registry=registry,
        )

    def observe(self, cosines, overlaps) -> None:
        for value in cosines:
            self.cosine.observe(value)
        for value in overlaps:
            if value is not None:
                self.overlap.observe(value)

    def update(self, stats: dict) -> None:
        """Set the gauges from :meth:`serve.monitor.AlignmentMonitor.stats` (NaN for no value yet)."""
        for key, gauge in self.gauges.items():
            value = stats.get(key)
            gauge.set(float("nan") if value is None else float(value))


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request by route template and status."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request_seconds.labels(scope["method"], route, str(status[0])).observe(
                time.perf_counter() - start
            )
