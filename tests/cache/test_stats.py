"""The shared counters in Redis: events per namespace and model in time windows, latency
histograms, and increments not written yet."""

from __future__ import annotations

import time

from cache.redis_client import RedisClient
from cache.stats import SLOT_S, Pending, StatsStore, latency_bin, percentile


async def test_events_latencies_and_amounts_per_window(redis: RedisClient, prefix: str) -> None:
    store = StatsStore(redis, prefix=prefix)
    now = 1_000_002.0  # two seconds into a 5-second slot
    pending: Pending = {}
    store.add(pending, "a", "m1", "exact", at=now - 3600 * 2, latency_ms=0.4, amount=7)
    store.add(pending, "a", "m1", "miss", at=now - 120, latency_ms=120.0)
    store.add(pending, "b", "m2", "semantic", at=now - 1, latency_ms=9.0, amount=3)
    await store.write(pending)
    await store.record("b", "m2", "wrong")  # now: outside these windows but in since_start
    windows = await store.read(now=now)
    assert windows.since_start.count("exact") == 1 and windows.since_start.count("wrong") == 1
    assert windows.since is not None
    assert windows.last_hour.count("miss") == 1 and windows.last_hour.count("exact") == 0
    assert windows.last_minute.count("semantic", namespace="b") == 1
    assert windows.last_minute.count("semantic", model="m1") == 0
    assert windows.since_start.cells[("a", "m1", "exact")].amount == 7
    (last_start, last), *_ = reversed(windows.slots)
    assert last_start <= now < last_start + SLOT_S and last.count("semantic") == 1
    bins = windows.since_start.cells[("a", "m1", "miss")].bins
    assert bins == {latency_bin(120.0): 1}
    assert 120 / 1.1 <= (percentile(bins, 0.5) or 0) <= 120 * 1.1


async def test_unwritten_increments_are_read_with_the_rest(redis: RedisClient, prefix: str) -> None:
    store = StatsStore(redis, prefix=prefix)
    await store.record("a", "m", "miss", latency_ms=5.0)
    extra: Pending = {}
    store.add(extra, "a", "m", "miss", at=10**10, latency_ms=5.0)  # far future: not read
    store.add(extra, "a", "m", "miss", at=time.time(), latency_ms=5.0)
    windows = await store.read(extra=extra)
    assert windows.since_start.count("miss") == 3  # since_start has no time
    assert windows.last_minute.count("miss") == 2
    assert store.windows({}, extra=extra).last_minute.count("miss") == 1  # Redis away


def test_percentiles_come_from_one_histogram() -> None:
    values = [1.0] * 50 + [10.0] * 49 + [1000.0]
    bins: dict[int, int] = {}
    for value in values:
        bins[latency_bin(value)] = bins.get(latency_bin(value), 0) + 1
    assert 0.95 <= (percentile(bins, 0.5) or 0) <= 1.05
    assert 9.5 <= (percentile(bins, 0.99) or 0) <= 10.5
    assert 950 <= (percentile(bins, 1.0) or 0) <= 1050
    assert percentile({}, 0.5) is None


def test_stale_increments_are_dropped_while_redis_is_away() -> None:
    store = StatsStore(None, prefix="p")  # type: ignore[arg-type]
    pending: Pending = {}
    store.add(pending, "a", "m", "miss", at=0.0)
    store.add(pending, "a", "m", "miss", at=10_000.0)
    store.drop_stale(pending, 10_000.0)
    kept = {key for key, _ in pending}
    assert kept == {"p:stats:all", "p:stats:m:166", "p:stats:s:2000"}
