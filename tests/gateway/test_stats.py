"""The gateway's own windowed request statistics."""

from __future__ import annotations

from gateway.stats import RequestStats


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_counts_rates_and_latency_per_window() -> None:
    clock = Clock()
    stats = RequestStats(clock=clock)
    for _ in range(3):
        stats.record("acme", "m1", "exact", latency_ms=1.0, saved_tokens=10)
    stats.record("acme", "m1", "semantic", latency_ms=12.0, saved_tokens=5)
    stats.record("globex", "m2", "miss", latency_ms=200.0)
    stats.record("globex", "m2", "miss", latency_ms=300.0, coalesced=True)
    stats.record("globex", "m2", "bypass", latency_ms=250.0)
    snap = stats.snapshot()["since_start"]
    overall = snap["overall"]
    assert overall["requests"] == 7
    assert (overall["exact_hits"], overall["semantic_hits"], overall["misses"]) == (3, 1, 2)
    assert overall["bypasses"] == 1
    assert overall["hit_rate"] == round(4 / 7, 4)
    assert overall["saved_upstream_calls"] == 5 and overall["saved_tokens"] == 35
    hits = overall["latency_ms"]["hits"]
    assert 0.9 <= hits["p50"] <= 1.1 and 11 <= hits["p99"] <= 13
    assert 190 <= overall["latency_ms"]["misses"]["p50"] <= 210
    assert snap["per_tenant"]["acme"]["requests"] == 4
    assert snap["per_model"]["m2"]["misses"] == 2


def test_old_requests_leave_the_short_windows() -> None:
    clock = Clock()
    stats = RequestStats(clock=clock)
    stats.record("t", "m", "miss", latency_ms=5.0)
    clock.now += 61
    stats.record("t", "m", "exact", latency_ms=1.0)
    snap = stats.snapshot()
    assert snap["last_minute"]["overall"]["requests"] == 1
    assert snap["last_hour"]["overall"]["requests"] == 2
    clock.now += 3600
    snap = stats.snapshot()
    assert snap["last_minute"]["overall"]["requests"] == 0
    assert snap["last_hour"]["overall"]["requests"] == 0
    assert snap["since_start"]["overall"]["requests"] == 2
