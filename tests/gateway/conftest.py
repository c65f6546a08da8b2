"""A gateway on a loopback port in front of the fake upstream, with the in-memory cache; or
gateways with the real ResponseCache on one Redis (fakeredis or the real one)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest

from cache.redis_client import RedisClient, connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.verifier import AllowAll
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.cache.conftest import BACKENDS, REAL_REDIS_URL
from tests.cache.fakes import FakeEmbedder, OpenGate
from tests.gateway.fakes import FakeResponseCache, UpstreamControl, fake_upstream, serving

ADMIN = "admin-secret"


@dataclass
class Stack:
    url: str
    upstream: UpstreamControl
    cache: FakeResponseCache

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {ADMIN}"}


@contextlib.asynccontextmanager
async def _stack(**overrides: Any) -> AsyncIterator[Stack]:
    control = UpstreamControl()
    cache = FakeResponseCache()
    async with serving(fake_upstream(control)) as upstream_url:
        fields: dict[str, Any] = {"upstreams": [upstream_url], "admin_token": ADMIN}
        fields.update(overrides)
        settings = GatewaySettings(**fields)
        async with serving(create_app(settings, cache=cache)) as url:
            yield Stack(url=url, upstream=control, cache=cache)


@pytest.fixture
def make_stack() -> Callable[..., contextlib.AbstractAsyncContextManager[Stack]]:
    """Builds a gateway stack with settings overrides: `async with make_stack(api_keys=...)`."""
    return _stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with _stack() as built:
        yield built


@dataclass
class SharedRedis:
    """One Redis (an in-process fakeredis server, or the real one) and a test's key prefix."""

    backend: str
    prefix: str = field(default_factory=lambda: f"sluicetest-{uuid.uuid4().hex[:10]}")
    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    clients: list[RedisClient] = field(default_factory=list)

    def client(self) -> RedisClient:
        made: RedisClient = (
            fakeredis.FakeAsyncRedis(server=self.server)
            if self.backend == "fake"
            else connect_redis(REAL_REDIS_URL, timeout_s=2.0)
        )
        self.clients.append(made)
        return made


@pytest.fixture(params=BACKENDS)
async def shared_redis(request: pytest.FixtureRequest) -> AsyncIterator[SharedRedis]:
    """A Redis for the gateways of one test; on the real one, its keys are removed after."""
    redis = SharedRedis(request.param)
    if redis.backend == "real":
        try:
            await redis.client().ping()
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"no Redis at {REAL_REDIS_URL}: {exc}")
    yield redis
    if redis.backend == "real":
        async for key in redis.clients[0].scan_iter(match=f"{redis.prefix}:*", count=1000):
            await redis.clients[0].delete(key)
    for client in redis.clients:
        await client.aclose()


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    """The fake upstream, on its own (for gateways built by the test)."""
    async with serving(fake_upstream(UpstreamControl())) as url:
        yield url


@contextlib.asynccontextmanager
async def real_gateway(
    redis: SharedRedis, upstream_url: str, **overrides: Any
) -> AsyncIterator[str]:
    """A gateway whose ResponseCache (word-overlap embedder, threshold 0.8) is on the shared
    Redis; open two for two replicas."""
    cache = ResponseCache(
        redis.client(),
        embedder=FakeEmbedder(),
        verifier=AllowAll(0.57),  # the verifier and the language gate have tests of their own
        language_gate=OpenGate(),
        key_prefix=redis.prefix,
        similarity_threshold=0.8,
        sync_interval_s=0.05,
        op_timeout_s=1.0,
    )
    fields: dict[str, Any] = {"upstreams": [upstream_url], "admin_token": ADMIN, **overrides}
    settings = GatewaySettings(**fields)
    async with cache, serving(create_app(settings, cache=cache)) as url:
        yield url


async def ask(url: str, key: str, text: str, **headers: str) -> tuple[str, str, httpx.Headers]:
    """A greedy chat request with API key `key`: (x-cache, answer text, headers)."""
    body = {"model": "fake", "messages": [{"role": "user", "content": text}], "temperature": 0}
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}", **headers},
        )
    reply.raise_for_status()
    return reply.headers["x-cache"], reply.json()["choices"][0]["message"]["content"], reply.headers


async def stored(url: str, key: str, text: str) -> None:
    """Asks until the answer comes from the cache (stores land just after the answer)."""
    for _ in range(100):
        if (await ask(url, key, text))[0] == "hit":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} was never stored")
