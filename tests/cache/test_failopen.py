"""Fail-open against a real redis-server that is stopped, slowed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest

from cache.redis_client import connect_redis
from cache.response_cache import ResponseCache
from tests.cache.conftest import answer, assert_fails_open, chat
from tests.cache.fakes import FakeEmbedder

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on a spare port, without persistence."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = RedisServer(_free_port())
    srv.start()
    yield srv
    srv.stop()


async def test_outage_gives_misses_one_warning_and_recovery(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect_redis(f"redis://127.0.0.1:{server.port}/0", timeout_s=0.5)
    body = chat("what time is it in Tokyo")
    async with ResponseCache(
        client,
        embedder=FakeEmbedder(),
        op_timeout_s=0.2,
        probe_interval_s=0.05,
        sync_interval_s=0.05,
        similarity_threshold=0.9,
    ) as cache:
        assert await cache.store("ns", "chat", body, answer("x")) is not None
        assert await cache.store("ns", "chat", chat("lost in the outage"), answer("z"))
        assert await cache.lookup("ns", "chat", body) is not None
        assert len(cache.index) == 2

        server.stop()
        await assert_fails_open(cache, body, caplog, rounds=5)

        server.start()  # a fresh, empty server on the same port
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sluice.cache"):
            deadline = time.monotonic() + 3
            stored = None
            while stored is None and time.monotonic() < deadline:
                stored = await cache.store("ns", "chat", body, answer("again"))
                await asyncio.sleep(0.05)
            assert stored is not None
            hit = await cache.lookup("ns", "chat", body)
            assert hit is not None and hit.response["choices"][0]["message"]["content"] == "again"
        assert any("back" in r.getMessage() for r in caplog.records)
        # The new server is empty: the index is rebuilt from it, dropping the lost entry.
        deadline = time.monotonic() + 3
        while len(cache.index) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(cache.index) == 1
    await client.aclose()


@contextlib.asynccontextmanager
async def cache_to_hang(
    server: RedisServer, body: dict[str, Any], *, probe_interval_s: float
) -> AsyncIterator[tuple[ResponseCache, Callable[[float], Coroutine[Any, Any, asyncio.Task[Any]]]]]:
    """A cache (50 ms limit per operation) holding `body`, and a way to hang its Redis."""
    client = connect_redis(f"redis://127.0.0.1:{server.port}/0", timeout_s=2.0)
    other = connect_redis(f"redis://127.0.0.1:{server.port}/0", timeout_s=2.0)
    probe = connect_redis(f"redis://127.0.0.1:{server.port}/0", timeout_s=2.0)

    async def hang(seconds: float) -> asyncio.Task[Any]:
        """Puts Redis to sleep and returns once it sleeps (a busy machine may take a while to
        send the command), with the task that ends when it wakes. Asleep means a PING on a
        third connection went unanswered for as long as the cache's own limit (50 ms)."""
        await other.ping()  # both connected: the sleep command goes out at once
        await probe.ping()
        sleeper = asyncio.create_task(other.execute_command("DEBUG", "SLEEP", str(seconds)))
        await asyncio.sleep(0.005)
        while not sleeper.done():
            try:
                await asyncio.wait_for(probe.ping(), 0.05)  # type: ignore[arg-type]
            except TimeoutError:
                return sleeper
            await asyncio.sleep(0.001)
        raise AssertionError("Redis woke before it was seen asleep")

    try:
        async with ResponseCache(
            client, embedder=None, op_timeout_s=0.05, probe_interval_s=probe_interval_s
        ) as cache:
            await cache.store("ns", "chat", body, answer("x"))
            yield cache, hang
    finally:
        await client.aclose()
        await other.aclose()
        await probe.aclose()


async def hit_within(cache: ResponseCache, body: dict[str, Any], seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while await cache.lookup("ns", "chat", body) is None:
        assert time.monotonic() < deadline, "the cache did not come back"
        await asyncio.sleep(0.05)


async def test_slow_redis_is_a_miss_within_the_timeout(server: RedisServer) -> None:
    body = chat("slow question")
    async with cache_to_hang(server, body, probe_interval_s=0.5) as (cache, hang):
        sleeper = await hang(0.5)
        started = time.perf_counter()
        assert await cache.lookup("ns", "chat", body) is None
        assert time.perf_counter() - started < 0.2
        await sleeper
        await hit_within(cache, body)


async def test_one_slow_answer_is_a_miss_not_an_outage(server: RedisServer) -> None:
    body = chat("a question asked during a snapshot fork")
    # An outage would skip Redis for the whole probe interval: the hit below would be missing.
    async with cache_to_hang(server, body, probe_interval_s=30) as (cache, hang):
        sleeper = await hang(0.3)
        assert await cache.lookup("ns", "chat", body) is None  # timed out: this one misses
        await sleeper
        assert await cache.lookup("ns", "chat", body) is not None
        assert cache.failopen.outages == 0
        assert cache.failopen.timeouts == 1


async def test_redis_silent_for_three_timeouts_is_an_outage(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = chat("a question asked while Redis hangs")
    async with cache_to_hang(server, body, probe_interval_s=0.2) as (cache, hang):
        sleeper = await hang(1.0)
        with caplog.at_level(logging.WARNING, logger="sluice.cache"):
            for _ in range(4):  # each waits out the timeout: 0.2 s of silence in all
                assert await cache.lookup("ns", "chat", body) is None
            assert cache.failopen.outages == 1
            started = time.perf_counter()
            assert await cache.lookup("ns", "chat", body) is None
            assert time.perf_counter() - started < 0.02, "an outage skips Redis"
        assert [r.message for r in caplog.records if "unavailable" in r.message]
        await sleeper
        await hit_within(cache, body)
        assert cache.failopen.healthy
