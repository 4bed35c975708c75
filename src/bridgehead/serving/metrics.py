"""Prometheus metrics for inference: requests, rows, errors and latency per endpoint and version.

Each app has its own registry (no module-level state). With several worker processes (``bridgehead serve
--workers N``) set ``PROMETHEUS_MULTIPROC_DIR`` to a shared empty directory and every worker's figures are
summed at /metrics, as prometheus_client's multiprocess mode does.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["InferenceMetrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class InferenceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bridgehead_inference_requests",
            "Inference requests by endpoint, serving version and HTTP status.",
            ["endpoint", "version", "status"],
            registry=self.registry,
        )
        self.rows = Counter(
            "bridgehead_inference_rows",
            "Rows scored by endpoint and version.",
            ["endpoint", "version"],
            registry=self.registry,
        )
        self.errors = Counter(
            "bridgehead_inference_errors",
            "Inference requests answered with an error, by endpoint and error code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bridgehead_inference_latency_seconds",
            "Time to answer an inference request (parsing, routing, scoring, logging), by endpoint and version.",
            ["endpoint", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe(self, endpoint: str, version: str, seconds: float, rows: int) -> None:
        self.requests.labels(endpoint, version, "200").inc()
        self.rows.labels(endpoint, version).inc(rows)
        self.latency.labels(endpoint, version).observe(seconds)

    def failed(self, endpoint: str, status: int, code: str) -> None:
        self.requests.labels(endpoint, "", str(status)).inc()
        self.errors.labels(endpoint, code).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(combined))
        return bytes(generate_latest(self.registry))
