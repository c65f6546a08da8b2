"""Fixtures: Redis backends (fakeredis and the real one), fake and real embedders."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from cache.embedder import SentenceTransformerEncoder
from cache.redis_client import RedisClient, connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.verifier import AllowAll
from tests.cache.fakes import FakeEmbedder, OpenGate

REAL_REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

BACKENDS = [
    pytest.param("fake", id="fakeredis"),
    pytest.param("real", marks=pytest.mark.redis, id="redis"),
]


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so runs never see each other's keys."""
    return f"sluicetest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=BACKENDS)
async def redis(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[RedisClient]:
    """fakeredis in process, or the real Redis (db 9) with this test's keys removed after."""
    if request.param == "fake":
        client = connect_redis(None)
        yield client
        await client.aclose()
        return
    client = connect_redis(REAL_REDIS_URL, timeout_s=2.0)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no Redis at {REAL_REDIS_URL}: {exc}")
    yield client
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()


CacheFactory = Callable[..., Awaitable[ResponseCache]]


@pytest.fixture
async def make_cache(redis: RedisClient, prefix: str) -> AsyncIterator[CacheFactory]:
    """Opens ResponseCaches on the test's Redis (fake embedder unless given); closes them after."""
    opened: list[ResponseCache] = []

    async def make(**kwargs: Any) -> ResponseCache:
        kwargs.setdefault("embedder", FakeEmbedder())
        kwargs.setdefault("verifier", AllowAll(0.57))  # the verifier has tests of its own
        kwargs.setdefault("language_gate", OpenGate())  # so has the language gate
        kwargs.setdefault("key_prefix", prefix)
        kwargs.setdefault("sync_interval_s", 0.05)
        kwargs.setdefault("op_timeout_s", 1.0)
        cache = ResponseCache(redis, **kwargs)
        await cache.__aenter__()
        opened.append(cache)
        return cache

    yield make
    for cache in reversed(opened):
        await cache.__aexit__(None, None, None)


@pytest.fixture(scope="session")
def st_encoder() -> SentenceTransformerEncoder:
    """all-MiniLM-L6-v2 loaded once for the whole session (about 3 s)."""
    return SentenceTransformerEncoder()


def chat(
    text: str, *, model: str = "m", system: str | None = None, **params: Any
) -> dict[str, Any]:
    """A chat completion body with one user turn (and an optional system prompt)."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages, **params}


def answer(text: str) -> dict[str, Any]:
    """A minimal OpenAI chat completion response."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


async def assert_fails_open(
    cache: ResponseCache,
    body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    *,
    rounds: int,
) -> None:
    """With Redis down: every call answers (miss, dropped store, empty admin) with one warning."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sluice.cache"):
        for _ in range(rounds):
            assert await cache.lookup("ns", "chat", body) is None
            assert await cache.store("ns", "chat", chat("other"), answer("y")) is None
            await asyncio.sleep(0.06)
        assert await cache.entries() == []
        assert await cache.invalidate(namespace="ns") == 0
        assert await cache.semantic_hits() == []
        assert await cache.ping() is False
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
