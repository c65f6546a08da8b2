"""The proxy in front of several fake upstreams: failover on refusals, upstream auth, and the
request's identity made once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cache import identity, keys, scope
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import SharedRedis, ask, real_gateway
from tests.gateway.fakes import (
    FakeResponseCache,
    UpstreamControl,
    chunk_shape,
    fake_upstream,
    serving,
    sse_chunks,
)


def _ask(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        **extra,
    }


@contextlib.asynccontextmanager
async def _gateway(*controls: UpstreamControl, **settings: Any) -> AsyncIterator[str]:
    """A gateway in front of one fake upstream per control, in the order given."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(fake_upstream(c))) for c in controls]
        config = GatewaySettings(upstreams=urls, admin_token="a", **settings)
        yield await stack.enter_async_context(
            serving(create_app(config, cache=FakeResponseCache()))
        )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [503, 429])
async def test_refusal_is_retried_on_a_free_upstream(status: int, stream: bool) -> None:
    busy = UpstreamControl(fail_status=status, fail_headers={"retry-after": "1"})
    free = UpstreamControl()
    async with _gateway(busy, free) as url, httpx.AsyncClient() as http:
        reply = await http.post(url + "/v1/chat/completions", json=_ask("hi", stream=stream))
        assert reply.status_code == 200
        assert "echo:" in reply.text
        assert (busy.calls, free.calls) == (1, 1)


@pytest.mark.parametrize("stream", [False, True])
async def test_all_refusing_passes_the_last_error_with_retry_after(stream: bool) -> None:
    controls = [
        UpstreamControl(fail_status=429, fail_headers={"retry-after": "7"}) for _ in range(2)
    ]
    async with _gateway(*controls) as url, httpx.AsyncClient() as http:
        reply = await http.post(url + "/v1/chat/completions", json=_ask("hi", stream=stream))
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "7"
    assert reply.json()["error"]["message"] == "boom"
    assert [c.calls for c in controls] == [1, 1]


async def test_upstream_key_is_sent_and_client_keys_never_are() -> None:
    guarded = UpstreamControl(required_key="up-secret")
    async with (
        _gateway(guarded, upstream_api_key="up-secret", api_keys="sk-client=acme") as url,
        httpx.AsyncClient(headers={"authorization": "Bearer sk-client"}) as http,
    ):
        reply = await http.post(url + "/v1/chat/completions", json=_ask("hi"))
        assert reply.status_code == 200
        streamed = await http.post(url + "/v1/chat/completions", json=_ask("yo", stream=True))
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
        assert (await http.get(url + "/v1/models")).status_code == 200
    assert guarded.authorizations == ["Bearer up-secret"] * 3


async def test_without_the_upstream_key_the_upstream_refusal_passes_through() -> None:
    guarded = UpstreamControl(required_key="up-secret")
    async with (
        _gateway(guarded) as url,
        httpx.AsyncClient(headers={"authorization": "Bearer up-secret"}) as http,
    ):
        reply = await http.post(url + "/v1/chat/completions", json=_ask("hi"))
    assert reply.status_code == 401
    assert guarded.authorizations == [None], "the client's key went upstream"


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("endpoint", ["chat", "completion"])
async def test_streamed_miss_and_replayed_hit_have_the_same_chunkchunk_shape(
    endpoint: str, include_usage: bool
) -> None:
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    ask = _ask("a b c", stream=True)
    if endpoint == "completion":
        ask = {"model": "fake", "prompt": "a b c", "temperature": 0, "stream": True}
    if include_usage:
        ask["stream_options"] = {"include_usage": True}
    async with _gateway(UpstreamControl()) as url, httpx.AsyncClient() as http:
        miss = await http.post(url + path, json=ask)
        assert miss.headers["x-cache"] == "miss"
        for _ in range(100):
            hit = await http.post(url + path, json=ask)
            if hit.headers["x-cache"] == "hit":
                break
            await asyncio.sleep(0.02)
    assert hit.headers["x-cache"] == "hit"
    missed, replayed = sse_chunks(miss.text), sse_chunks(hit.text)
    # OpenAI leaves `usage` out of every chunk unless the client asked for it.
    assert all(("usage" in c) == include_usage for c in missed + replayed)
    assert chunk_shape(missed) == chunk_shape(replayed)


async def test_a_request_is_canonicalised_once_for_flight_lookups_and_store(
    shared_redis: SharedRedis, upstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    original = keys.canonical_request

    def counted(namespace: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        made.append(body["messages"][-1]["content"])
        return original(namespace, endpoint, body)

    for module in (keys, scope, identity):
        monkeypatch.setattr(module, "canonical_request", counted)
    asked: list[str] = []

    async def ask_as(text: str) -> str:
        asked.append(text)
        return (await ask(url, "any", text))[0]

    async with real_gateway(shared_redis, upstream_url) as url:
        # A miss: single-flight key, exact lookup, the semantic lookup racing the upstream
        # call, and the store once answered.
        assert await ask_as("cheap flights to Paris") == "miss"
        while await ask_as("cheap flights to Paris") != "hit":  # stored just after the answer
            await asyncio.sleep(0.02)
        assert await ask_as("Paris cheap flights to") == "semantic"
    assert made == asked
