"""Prometheus metrics of one backend app, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Outcomes of sluice_backend_requests_total; documented in docs/backend.md.
OUTCOMES = ("ok", "cancelled", "timeout", "rejected", "unavailable", "error", "invalid")

_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class BackendMetrics:
    """The backend's counters, gauges and histograms; the gateway reads these names."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "sluice_backend_queue_depth", "Requests waiting for a batch.", registry=r
        )
        self.running_rows = Gauge(
            "sluice_backend_running_rows", "Rows in the batch the engine is running.", registry=r
        )
        self.batch_size = Histogram(
            "sluice_backend_batch_size",
            "Rows per batch handed to the engine.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "sluice_backend_queue_wait_seconds",
            "Time from arrival to the start of the request's batch.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_run_seconds = Histogram(
            "sluice_backend_batch_run_seconds",
            "Wall time of one engine run over a batch.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.generated_tokens = Counter(
            "sluice_backend_generated_tokens",
            "Completion tokens generated.",
            registry=r,
        )
        self.prompt_tokens = Counter(
            "sluice_backend_prompt_tokens",
            "Prompt tokens of requests that reached the engine.",
            registry=r,
        )
        self.requests = Counter(
            "sluice_backend_requests",
            "Requests answered, by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome=outcome)

    def count_request(self, outcome: str) -> None:
        """Counts one answered request under its outcome label."""
        self.requests.labels(outcome=outcome).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
