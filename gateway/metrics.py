"""Prometheus metrics of one gateway process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """Request counts by tenant, model and cache outcome; latency; upstream failures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sluice_gateway_requests",
            "Answered requests by tenant, model, endpoint and cache outcome.",
            ["tenant", "model", "endpoint", "cache"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_gateway_request_seconds",
            "Time from request to the end of the answer, by cache outcome.",
            ["cache"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.saved_tokens = Counter(
            "sluice_gateway_saved_tokens",
            "Tokens (prompt + completion) of answers served from the cache.",
            ["tenant", "model"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "sluice_gateway_upstream_errors",
            "Requests that failed upstream (unreachable, timeout, cut stream).",
            ["kind"],
            registry=self.registry,
        )
        self.coalesced = Counter(
            "sluice_gateway_coalesced_requests",
            "Misses that waited for an identical in-flight upstream call instead of making one.",
            registry=self.registry,
        )
        self.speculation_dropped = Counter(
            "sluice_gateway_speculative_calls_dropped",
            "Upstream calls started during a semantic lookup and dropped because it hit.",
            registry=self.registry,
        )
        self.inflight = Gauge(
            "sluice_gateway_inflight_requests",
            "Requests being answered now.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


def backend_batch_stats(text: str) -> dict[str, float | None]:
    """Reads a Sluice backend's batching figures out of its Prometheus text."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value

    def get(name: str) -> float | None:
        return sums.get(f"sluice_backend_{name}")

    def mean(name: str, scale: float = 1.0) -> float | None:
        count, total = get(f"{name}_count"), get(f"{name}_sum")
        if not count or total is None:
            return None
        return round(total / count * scale, 3)

    return {
        "queue_depth": get("queue_depth"),
        "requests": get("requests_total"),
        "generated_tokens": get("generated_tokens_total"),
        "batches": get("batch_size_count"),
        "mean_batch_size": mean("batch_size"),
        "mean_queue_wait_ms": mean("queue_wait_seconds", 1000.0),
        "mean_batch_run_ms": mean("batch_run_seconds", 1000.0),
    }
