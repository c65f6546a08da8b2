"""Prometheus metrics of one gateway process, in a registry of its own."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """This process's Prometheus registry: upstream failures, dropped speculative calls,
    requests refused by a tenant's limits and requests in progress here; `RequestStats`
    registers the request counts in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.upstream_errors = Counter(
            "sluice_gateway_upstream_errors",
            "Requests that failed upstream (unreachable, timeout, cut stream).",
            ["kind"],
            registry=self.registry,
        )
        self.speculation_dropped = Counter(
            "sluice_gateway_speculative_calls_dropped",
            "Upstream calls started during a semantic lookup and dropped because it hit.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "sluice_gateway_rate_limited",
            "Requests answered 429 by this process for a tenant's limit (requests, tokens, "
            "concurrency).",
            ["tenant", "limit"],
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


class InflightRequests:
    """ASGI middleware: keeps `sluice_gateway_inflight_requests` at the number of OpenAI
    requests (/v1/...) this process is answering, streams until their last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        gauge = scope["state"]["services"].metrics.inflight
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            gauge.dec()


def _histogram(buckets: dict[float, float]) -> list[tuple[float, float]]:
    """Cumulative Prometheus buckets as (upper bound, count in that bucket alone)."""
    out, below = [], 0.0
    for le in sorted(buckets):
        out.append((le, buckets[le] - below))
        below = buckets[le]
    return out


def _quantile_upper(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (None without observations)."""
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None


def backend_batch_stats(text: str) -> dict[str, Any]:
    """Reads a Sluice backend's batching figures out of its Prometheus text."""
    sums: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                le = float(sample.labels["le"])
                held = buckets.setdefault(sample.name, {})
                held[le] = held.get(le, 0.0) + sample.value

    def get(name: str) -> float | None:
        return sums.get(f"sluice_backend_{name}")

    def mean(name: str, scale: float = 1.0) -> float | None:
        count, total = get(f"{name}_count"), get(f"{name}_sum")
        if not count or total is None:
            return None
        return round(total / count * scale, 3)

    sizes = buckets.get("sluice_backend_batch_size_bucket", {})
    waits = buckets.get("sluice_backend_queue_wait_seconds_bucket", {})

    def wait_ms(q: float) -> float | None:
        upper = _quantile_upper(waits, q)
        return None if upper is None else (math.inf if math.isinf(upper) else upper * 1000.0)

    return {
        "queue_depth": get("queue_depth"),
        "running_rows": get("running_rows"),
        "requests": get("requests_total"),
        "generated_tokens": get("generated_tokens_total"),
        "batches": get("batch_size_count"),
        "mean_batch_size": mean("batch_size"),
        # Rows per batch: [largest size of the bucket, batches], "+Inf" for the last.
        "batch_sizes": [
            ["+Inf" if math.isinf(le) else int(le), int(n)] for le, n in _histogram(sizes)
        ],
        "mean_queue_wait_ms": mean("queue_wait_seconds", 1000.0),
        # Upper bounds of the histogram buckets holding the median and the 99th percentile.
        "queue_wait_ms_p50_at_most": _json_number(wait_ms(0.5)),
        "queue_wait_ms_p99_at_most": _json_number(wait_ms(0.99)),
        "mean_batch_run_ms": mean("batch_run_seconds", 1000.0),
    }


def _json_number(value: float | None) -> float | str | None:
    return "+Inf" if value is not None and math.isinf(value) else value
