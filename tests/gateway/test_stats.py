"""The one statistics model: counted once per request, summed over replicas through Redis,
read the same way by /admin/stats, `sluice stats` and /metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import fakeredis
import httpx
import pytest
from prometheus_client import CollectorRegistry

from cache.redis_client import connect_redis
from cache.stats import Pending, StatsStore
from gateway.cli import main
from gateway.stats import RequestStats
from tests.gateway.conftest import ADMIN, SharedRedis, Stack, ask, real_gateway, stored
from tests.gateway.fakes import free_port

ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _stats(redis: fakeredis.FakeAsyncRedis, clock: Clock | None = None) -> RequestStats:
    store = StatsStore(redis, prefix="t")
    if clock is None:
        return RequestStats(store, registry=CollectorRegistry())
    return RequestStats(store, registry=CollectorRegistry(), clock=clock)


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


async def test_counts_rates_savings_and_latency(redis: fakeredis.FakeAsyncRedis) -> None:
    stats = _stats(redis)
    for _ in range(3):
        stats.record("acme", "m1", "exact", latency_ms=1.0, saved_tokens=10)
    stats.record("acme", "m1", "semantic", latency_ms=12.0, saved_tokens=5)
    stats.record("globex", "m2", "miss", latency_ms=200.0)
    stats.record("globex", "m2", "miss", latency_ms=300.0, coalesced=True)
    stats.record("globex", "m2", "bypass", latency_ms=250.0)
    stats.record("globex", "m2", "error", latency_ms=5.0)
    snap = (await stats.snapshot())["since_start"]
    overall = snap["overall"]
    assert overall["requests"] == 8
    assert (overall["exact_hits"], overall["semantic_hits"], overall["misses"]) == (3, 1, 1)
    assert (overall["coalesced"], overall["bypasses"], overall["errors"]) == (1, 1, 1)
    assert overall["hit_rate"] == round(4 / 8, 4)
    assert overall["saved_upstream_calls"] == 5 and overall["saved_tokens"] == 35
    hits = overall["latency_ms"]["hits"]
    assert 0.95 <= hits["p50"] <= 1.05 and 11.4 <= hits["p99"] <= 12.6
    assert 190 <= overall["latency_ms"]["misses"]["p50"] <= 210
    assert 285 <= overall["latency_ms"]["misses"]["p99"] <= 315
    assert snap["per_tenant"]["acme"]["requests"] == 4
    assert snap["per_model"]["m2"]["misses"] == 1


async def test_old_requests_leave_the_short_windows_and_the_timeline_has_them(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    clock = Clock()
    stats = _stats(redis, clock)
    stats.record("t", "m", "miss", latency_ms=5.0)
    clock.now += 61
    stats.record("t", "m", "exact", latency_ms=1.0)
    snap = await stats.snapshot()
    assert snap["last_minute"]["overall"]["requests"] == 1
    assert snap["last_hour"]["overall"]["requests"] == 2
    seconds = snap["timeline"]["seconds"]
    assert seconds["step_s"] == 5 and len(seconds["points"]) == 36
    assert seconds["points"][-1]["t"] <= clock.now < seconds["points"][-1]["t"] + 5
    assert [p["overall"]["exact"] for p in seconds["points"]][-1] == 1
    assert sum(p["overall"]["miss"] for p in seconds["points"]) == 1  # 61 s ago: still shown
    minutes = snap["timeline"]["minutes"]["points"]
    assert len(minutes) == 60 and sum(p["per_tenant"].get("t", {}).get("miss", 0) for p in minutes)
    assert await stats.flush()  # read alike, written or not
    clock.now += 3600
    snap = await stats.snapshot()
    assert snap["last_minute"]["overall"]["requests"] == 0
    assert snap["last_hour"]["overall"]["requests"] == 0
    assert snap["since_start"]["overall"]["requests"] == 2
    assert snap["counting_since"] is not None


async def test_two_processes_on_one_redis_read_the_sum(shared_redis: SharedRedis) -> None:
    first = RequestStats(
        StatsStore(shared_redis.client(), prefix=shared_redis.prefix), registry=CollectorRegistry()
    )
    second = RequestStats(
        StatsStore(shared_redis.client(), prefix=shared_redis.prefix), registry=CollectorRegistry()
    )
    async with first, second:
        first.record("acme", "m", "exact", latency_ms=1.0)
        second.record("acme", "m", "miss", latency_ms=100.0)
        second.record("globex", "m", "semantic", latency_ms=4.0)
        # Each process writes its counts every half second; the other reads them from Redis.
        for stats in (first, second):
            for _ in range(50):
                overall = (await stats.snapshot())["last_minute"]["overall"]
                if overall["requests"] == 3:
                    break
                await asyncio.sleep(0.1)
            assert (overall["requests"], overall["exact_hits"], overall["misses"]) == (3, 1, 1)
            assert overall["semantic_hits"] == 1


async def test_counts_wait_while_redis_is_away_then_land() -> None:
    port = free_port()
    away = connect_redis(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    store = StatsStore(away, prefix="t")
    stats = RequestStats(store, registry=CollectorRegistry(), timeout_s=0.5)
    stats.record("acme", "m", "miss", latency_ms=3.0)
    stats.record("acme", "m", "miss", latency_ms=3.0)
    snap = await stats.snapshot()
    assert snap["redis_available"] is False
    assert snap["since_start"]["overall"]["misses"] == 2  # this process's, not yet written
    back = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store.redis = back
    assert await stats.flush()
    snap = await stats.snapshot()
    assert snap["redis_available"] is True
    assert snap["since_start"]["overall"]["misses"] == 2  # written once, not counted twice
    assert int(await back.hget("t:stats:all", "c\x1facme\x1fm\x1fmiss")) == 2  # type: ignore[misc,arg-type]
    await away.aclose()
    await back.aclose()


class _HeldStore(StatsStore):
    """A store whose writes wait for `release`."""

    def __init__(self, redis: fakeredis.FakeAsyncRedis) -> None:
        super().__init__(redis, prefix="t")
        self.release = asyncio.Event()

    async def write(self, pending: Pending) -> None:
        await self.release.wait()
        await super().write(pending)


async def test_a_write_in_progress_is_read_once(redis: fakeredis.FakeAsyncRedis) -> None:
    store = _HeldStore(redis)
    stats = RequestStats(store, registry=CollectorRegistry(), timeout_s=0.2)
    stats.record("acme", "m", "miss", latency_ms=3.0)
    writing = asyncio.create_task(stats.flush())
    await asyncio.sleep(0.01)
    stats.record("acme", "m", "exact", latency_ms=1.0)
    # Redis too slow for the read: this process's counts, the batch being written included.
    snap = await stats.snapshot()
    assert snap["redis_available"] is False
    assert (
        snap["since_start"]["overall"]["misses"],
        snap["since_start"]["overall"]["exact_hits"],
    ) == (1, 1)
    # A read that meets the write waits for it, and counts what it wrote once.
    stats.timeout_s = 5.0
    reading = asyncio.create_task(stats.snapshot())
    await asyncio.sleep(0.01)
    store.release.set()
    assert await writing
    snap = await reading
    assert snap["redis_available"] is True
    assert (
        snap["since_start"]["overall"]["misses"],
        snap["since_start"]["overall"]["exact_hits"],
    ) == (1, 1)


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample over every label set that includes `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_metrics_and_admin_stats_count_the_same_requests(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        for text in ("one", "two", "one", "one", "three"):
            body = {"model": "fake", "messages": [{"role": "user", "content": text}]}
            body["temperature"] = 0
            await http.post("/v1/chat/completions", json=body)
            await asyncio.sleep(0.05)  # the store lands just after the answer
        bypass = {"model": "fake", "messages": [{"role": "user", "content": "sampled"}]}
        await http.post("/v1/chat/completions", json=bypass)
        stats = (await http.get("/admin/stats", headers=stack.admin_headers)).json()
        text = (await http.get("/metrics")).text
    overall = stats["gateway"]["since_start"]["overall"]
    assert (overall["misses"], overall["exact_hits"], overall["bypasses"]) == (3, 2, 1)
    for outcome, key in (("miss", "misses"), ("exact", "exact_hits"), ("bypass", "bypasses")):
        counted = _metric(text, "sluice_gateway_requests_total", outcome=outcome, tenant="default")
        assert counted == overall[key]
    assert _metric(text, "sluice_gateway_request_seconds_count", outcome="exact") == 2
    assert _metric(text, "sluice_gateway_saved_tokens_total") == overall["saved_tokens"] > 0


async def test_two_replicas_show_the_sum_in_admin_stats_and_sluice_stats(
    shared_redis: SharedRedis,
    upstream_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = "sk-a=acme,sk-b=globex"
    async with (
        real_gateway(shared_redis, upstream_url, api_keys=keys) as first,
        real_gateway(shared_redis, upstream_url, api_keys=keys) as second,
    ):
        await ask(first, "sk-a", "first question")  # miss
        await stored(first, "sk-a", "first question")  # misses until stored, then one hit
        await ask(second, "sk-a", "first question")  # hit on the other replica
        await ask(second, "sk-b", "another question")  # miss
        sent: dict[str, int] = {}
        for url in (first, second):
            async with httpx.AsyncClient() as http:
                one = (await http.get(url + "/metrics")).text
            for outcome in ("exact", "miss"):
                sent[outcome] = sent.get(outcome, 0) + int(
                    _metric(one, "sluice_gateway_requests_total", outcome=outcome)
                )
        assert sent["exact"] == 2 and sent["miss"] >= 2
        await asyncio.sleep(0.6)  # each replica writes its counts to Redis every half second
        for url in (first, second):
            async with httpx.AsyncClient(headers=ADMIN_HEADERS) as http:
                stats = (await http.get(url + "/admin/stats")).json()["gateway"]
            overall = stats["since_start"]["overall"]
            assert (overall["exact_hits"], overall["misses"]) == (sent["exact"], sent["miss"])
            assert stats["since_start"]["per_tenant"]["globex"]["misses"] == 1
            monkeypatch.setenv("SLUICE_GATEWAY_ADMIN_TOKEN", ADMIN)
            assert await asyncio.to_thread(main, ["stats", "--url", url]) == 0
            out = capsys.readouterr().out
            row = next(line for line in out.splitlines() if line.startswith("overall"))
            requests, exact, _, miss = row.split()[1:5]
            assert (int(requests), int(exact), int(miss)) == (
                sent["exact"] + sent["miss"],
                sent["exact"],
                sent["miss"],
            )


async def test_requests_in_progress_are_a_gauge_in_metrics(stack: Stack) -> None:
    stack.upstream.delay_s = 0.5
    body = {"model": "fake", "messages": [{"role": "user", "content": "slow"}], "stream": True}
    async with httpx.AsyncClient(base_url=stack.url) as http:

        async def inflight() -> float:
            return _metric_plain(
                (await http.get("/metrics")).text, "sluice_gateway_inflight_requests"
            )

        asked = [
            asyncio.create_task(http.post("/v1/chat/completions", json=body)) for _ in range(2)
        ]
        for _ in range(40):
            if await inflight() == 2:
                break
            await asyncio.sleep(0.02)
        assert await inflight() == 2
        await asyncio.gather(*asked)
        assert await inflight() == 0


def _metric_plain(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] == name)
