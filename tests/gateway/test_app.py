"""The cache flow through real HTTP, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import Stack


def _client(stack: Stack, key: str = "sk-any") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def _ask(text: str, **extra: Any) -> dict[str, Any]:
    """A cacheable (greedy) chat request unless `extra` says otherwise."""
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        **extra,
    }


async def _chat(client: openai.AsyncOpenAI, text: str, **extra: Any) -> tuple[str, str, Any]:
    raw = await client.chat.completions.with_raw_response.create(**_ask(text, **extra))
    completion = raw.parse()
    return raw.headers["x-cache"], completion.choices[0].message.content or "", raw


async def _admin(stack: Stack, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.url, headers=stack.admin_headers) as http:
        return await http.request(method, path, **kwargs)


async def _settled(stack: Stack) -> None:
    """Waits until the gateway's background stores have reached the cache."""
    for _ in range(200):
        stats = (await _admin(stack, "GET", "/admin/stats")).json()
        if stats["in_flight_upstream_calls"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("stores did not settle")


async def test_repeat_hits_paraphrase_is_semantic_other_question_misses(stack: Stack) -> None:
    client = _client(stack)
    first = await _chat(client, "Where is Paris?")
    assert first[:2] == ("miss", "echo: Where is Paris?")
    await _settled(stack)
    again = await _chat(client, "Where is Paris?")
    assert again[:2] == ("hit", "echo: Where is Paris?")
    assert again[2].headers["x-cache-entry"]
    paraphrase = await _chat(client, "where is paris")
    assert paraphrase[:2] == ("semantic", "echo: Where is Paris?")
    assert paraphrase[2].headers["x-cache-similarity"] == "0.9500"
    other = await _chat(client, "Where is Lyon?")
    assert other[:2] == ("miss", "echo: Where is Lyon?")
    # Only the two misses went upstream, besides the paraphrase's speculative call, which may or
    # may not get there before the (instant) semantic hit drops it; test_speculation covers that.
    asked = [body["messages"][-1]["content"] for body in stack.upstream.bodies]
    assert [q for q in asked if q != "where is paris"] == ["Where is Paris?", "Where is Lyon?"]


async def test_repeat_before_the_store_lands_is_answered_from_memory(stack: Stack) -> None:
    client = _client(stack)
    assert (await _chat(client, "quick"))[0] == "miss"
    # No wait for the store: the finished flight answers the repeat, upstream is not called.
    assert (await _chat(client, "quick"))[:2] == ("hit", "echo: quick")
    assert stack.upstream.calls == 1


async def test_streamed_miss_is_passed_through_then_replayed_as_a_stream(stack: Stack) -> None:
    client = _client(stack)
    raw = await client.chat.completions.with_raw_response.create(**_ask("a b c d", stream=True))
    assert raw.headers["x-cache"] == "miss"
    chunks = [chunk async for chunk in raw.parse()]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "echo: a b c d"
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    assert len(chunks) >= 5, "the miss is relayed piece by piece"
    # The upstream was asked for usage so that the stored answer carries it.
    assert stack.upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    await _settled(stack)
    stored = await _chat(client, "a b c d")
    assert stored[:2] == ("hit", "echo: a b c d")
    assert stored[2].parse().usage.total_tokens == 7 + 5

    raw = await client.chat.completions.with_raw_response.create(
        **_ask("a b c d", stream=True, stream_options={"include_usage": True})
    )
    assert raw.headers["x-cache"] == "hit"
    replayed = [chunk async for chunk in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == streamed
    assert replayed[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "stop"
    assert replayed[-1].usage is not None and replayed[-1].usage.total_tokens == 12
    assert stack.upstream.calls == 1


async def test_hit_replay_is_a_well_formed_sse_stream(stack: Stack) -> None:
    client = _client(stack)
    await _chat(client, "hello there")
    await _settled(stack)
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            stack.url + "/v1/chat/completions", json=_ask("hello there", stream=True)
        )
    assert reply.headers["x-cache"] == "hit"
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = reply.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


async def test_completions_endpoint_streams_and_caches(stack: Stack) -> None:
    client = _client(stack)
    stream = await client.completions.create(
        model="fake", prompt="one two", temperature=0, stream=True
    )
    text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert text == "echo: one two"
    await _settled(stack)
    raw = await client.completions.with_raw_response.create(
        model="fake", prompt="one two", temperature=0
    )
    assert raw.headers["x-cache"] == "hit"
    assert raw.parse().choices[0].text == "echo: one two"
    listed = [chunk async for chunk in await client.completions.create(
        model="fake", prompt="one two", temperature=0, stream=True
    )]  # fmt: skip
    assert "".join(c.choices[0].text for c in listed if c.choices) == "echo: one two"


async def test_truncated_stream_and_errors_are_never_stored(stack: Stack) -> None:
    client = _client(stack)
    stack.upstream.truncate = True
    stream = await client.chat.completions.create(**_ask("w x y z", stream=True))
    _ = [chunk async for chunk in stream]
    stack.upstream.truncate = False
    await _settled(stack)
    assert (await _chat(client, "w x y z"))[0] == "miss"

    stack.upstream.fail_status = 500
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(**_ask("fails"))
    stack.upstream.fail_status = None
    await _settled(stack)
    assert (await _chat(client, "fails"))[0] == "miss"
    assert stack.upstream.calls == 4


async def test_concurrent_identical_misses_share_one_upstream_call(stack: Stack) -> None:
    stack.upstream.delay_s = 0.3
    client = _client(stack)
    results = await asyncio.gather(*(_chat(client, "same question") for _ in range(6)))
    assert stack.upstream.calls == 1
    assert {r[1] for r in results} == {"echo: same question"}
    assert [r[0] for r in results] == ["miss"] * 6
    stats = (await _admin(stack, "GET", "/admin/stats")).json()
    assert stats["gateway"]["since_start"]["overall"]["coalesced"] == 5


async def test_streamed_followers_of_one_flight_get_streams(stack: Stack) -> None:
    stack.upstream.delay_s = 0.3
    client = _client(stack)

    async def stream_text() -> str:
        stream = await client.chat.completions.create(**_ask("shared stream", stream=True))
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*(stream_text() for _ in range(4)))
    assert texts == ["echo: shared stream"] * 4
    assert stack.upstream.calls == 1


async def test_cache_control_headers(stack: Stack) -> None:
    client = _client(stack)
    no_store = {"extra_headers": {"cache-control": "no-store"}}
    assert (await _chat(client, "q1", **no_store))[0] == "miss"
    await _settled(stack)
    assert (await _chat(client, "q1", **no_store))[0] == "miss"
    assert stack.cache.exact == {}

    assert (await _chat(client, "q2"))[0] == "miss"
    await _settled(stack)
    no_cache = {"extra_headers": {"cache-control": "no-cache"}}
    assert (await _chat(client, "q2", **no_cache))[0] == "miss"
    assert stack.upstream.calls == 4
    both = {"extra_headers": {"cache-control": "no-cache, no-store"}}
    assert (await _chat(client, "q2", **both))[0] == "bypass"

    assert (await _chat(client, "q3", extra_headers={"x-cache-ttl": "60"}))[0] == "miss"
    await _settled(stack)
    assert [e.ttl_s for e in stack.cache.exact.values() if e.question == "q3"] == [60]
    with pytest.raises(openai.BadRequestError):
        await _chat(client, "q4", extra_headers={"x-cache-ttl": "soon"})


async def test_sampled_requests_without_a_seed_bypass_by_default(stack: Stack) -> None:
    client = _client(stack)
    unset = {"model": "fake", "messages": [{"role": "user", "content": "s"}]}
    async with httpx.AsyncClient() as http:
        for _ in range(2):  # "regenerate": never served from the cache
            reply = await http.post(stack.url + "/v1/chat/completions", json=unset)
            assert reply.headers["x-cache"] == "bypass"
    assert (await _chat(client, "s", temperature=0.7))[0] == "bypass"
    assert (await _chat(client, "s", temperature=0.7, top_p=0.5))[0] == "bypass"
    assert (await _chat(client, "s", temperature=0.7, seed=3))[0] == "miss"
    assert (await _chat(client, "s", temperature=0, top_p=0.5))[0] == "miss"
    await _settled(stack)
    assert (await _chat(client, "s", temperature=0.7, seed=3))[0] == "hit"
    raw = await client.completions.with_raw_response.create(
        model="fake", prompt=["a", "b"], temperature=0
    )
    assert raw.headers["x-cache"] == "bypass"


async def test_sampled_requests_are_cached_when_configured(make_stack: Any) -> None:
    async with make_stack(cache_sampled=True) as stack:
        client = _client(stack)
        assert (await _chat(client, "s", temperature=0.7))[0] == "miss"
        await _settled(stack)
        assert (await _chat(client, "s", temperature=0.7))[0] == "hit"


async def test_api_keys_map_to_isolated_tenants(make_stack: Any) -> None:
    async with make_stack(api_keys="sk-a=acme,sk-b=globex") as stack:
        with pytest.raises(openai.AuthenticationError):
            await _chat(_client(stack, "sk-wrong"), "hi")
        async with httpx.AsyncClient() as http:
            reply = await http.post(stack.url + "/v1/chat/completions", json=_ask("hi"))
        assert reply.status_code == 401
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
        acme, globex = _client(stack, "sk-a"), _client(stack, "sk-b")
        assert (await _chat(acme, "secret plan"))[0] == "miss"
        await _settled(stack)
        assert (await _chat(acme, "secret plan"))[0] == "hit"
        assert (await _chat(globex, "secret plan"))[0] == "miss"
        assert (await _chat(globex, "Secret plan!"))[0] == "semantic"  # its own entry
        stats = (await _admin(stack, "GET", "/admin/stats")).json()["gateway"]["since_start"]
        assert stats["per_tenant"]["acme"]["requests"] == 2
        assert stats["per_tenant"]["globex"]["semantic_hits"] == 1


async def test_body_limit_is_413(make_stack: Any) -> None:
    async with make_stack(max_body_bytes=200) as stack:
        with pytest.raises(openai.APIStatusError) as caught:
            await _chat(_client(stack), "x" * 500)
        assert caught.value.status_code == 413
        assert stack.upstream.calls == 0


async def test_bad_json_is_400_in_openai_shape(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(stack.url + "/v1/chat/completions", content=b"{nope")
        missing = await http.post(stack.url + "/v1/chat/completions", json={"model": "fake"})
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"


async def test_upstream_down_serves_hits_and_503s_misses(make_stack: Any) -> None:
    async with make_stack() as stack:
        client = _client(stack)
        await _chat(client, "kept")
        await _settled(stack)
    # Same cache, but the only upstream is now a closed port.
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from tests.gateway.fakes import free_port, serving

    dead = GatewaySettings(upstreams=[f"http://127.0.0.1:{free_port()}"], admin_token="a")
    async with serving(create_app(dead, cache=stack.cache)) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(**_ask("kept"))
        assert raw.headers["x-cache"] == "hit"
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(**_ask("not kept"))
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "/ready")).status_code == 503
            assert (await http.get(url + "/health")).status_code == 200


async def test_cache_down_means_upstream_without_client_visible_error(stack: Stack) -> None:
    client = _client(stack)
    await _chat(client, "steady")
    await _settled(stack)
    stack.cache.down = True
    assert (await _chat(client, "steady"))[:2] == ("miss", "echo: steady")
    stream = await client.chat.completions.create(**_ask("steady", stream=True))
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
        "echo: steady"
    )
    async with httpx.AsyncClient() as http:
        ready = await http.get(stack.url + "/ready")
    assert ready.status_code == 503 and ready.json()["redis"] is False
    stack.cache.down = False
    assert (await _chat(client, "steady"))[0] == "hit"
    assert stack.upstream.calls == 3


async def test_admin_routes(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        assert (await http.get("/admin/stats")).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await http.get("/admin/stats", headers=wrong)).status_code == 401
    client = _client(stack)
    for text in ("a1", "a2", "a3"):
        await _chat(client, text)
    await _settled(stack)
    await _chat(client, "a1")
    page = (await _admin(stack, "GET", "/admin/cache/entries", params={"limit": 2})).json()
    assert len(page["data"]) == 2 and page["next_offset"] == 2
    assert {"entry_id", "namespace", "model", "hits"} <= set(page["data"][0])
    top = (await _admin(stack, "GET", "/admin/cache/top", params={"limit": 2})).json()
    assert (top["data"][0]["question"], top["data"][0]["hits"]) == ("a1", 1)
    assert len(top["data"]) == 2 and top["scanned"] == 3
    stats = (await _admin(stack, "GET", "/admin/stats")).json()
    overall = stats["gateway"]["since_start"]["overall"]
    assert (overall["requests"], overall["misses"], overall["exact_hits"]) == (4, 3, 1)
    assert overall["saved_tokens"] == 7 + 2  # "echo: a1" is two words
    assert overall["latency_ms"]["hits"]["p50"] > 0
    backend = next(iter(stats["backends"].values()))
    assert backend["batching"]["mean_batch_size"] == 2.5
    assert backend["batching"]["queue_depth"] == 2.0
    assert (await _admin(stack, "DELETE", "/admin/cache")).status_code == 400
    entry = page["data"][0]["entry_id"]
    deleted = await _admin(stack, "DELETE", "/admin/cache", params={"entry_id": entry})
    assert deleted.json() == {"deleted": 1}
    deleted = await _admin(stack, "DELETE", "/admin/cache", params={"tenant": "default"})
    assert deleted.json() == {"deleted": 2}
    assert (await _chat(client, "a1"))[0] == "miss"


async def test_health_ready_metrics_models(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        ready = await http.get("/ready")
        assert ready.status_code == 200 and ready.json()["redis"] is True
        await _chat(_client(stack), "counted")
        text = (await http.get("/metrics")).text
        assert 'sluice_gateway_requests_total{model="fake",outcome="miss",tenant="default"}' in text
        missing = await http.get("/nowhere")
        assert missing.status_code == 404 and "error" in missing.json()
    models = await _client(stack).models.list()
    assert [m.id for m in models.data] == ["fake"]


async def test_prompts_and_answers_stay_out_of_logs_unless_asked(
    make_stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_stack() as stack:
        await _chat(_client(stack), "my secret question")
    assert caplog.records, "the gateway logs each request at debug level"
    assert "secret" not in caplog.text
    caplog.clear()
    async with make_stack(log_bodies=True) as stack:
        await _chat(_client(stack), "my secret question")
    assert "my secret question" in caplog.text


async def test_upstream_crash_mid_stream_is_an_error_event_and_not_stored(stack: Stack) -> None:
    stack.upstream.crash = True
    stream = await _client(stack).chat.completions.create(**_ask("p q r s", stream=True))
    with pytest.raises(openai.APIError, match="broke off"):
        _ = [chunk async for chunk in stream]
    stack.upstream.crash = False
    await _settled(stack)
    assert stack.cache.exact == {}
    assert (await _chat(_client(stack), "p q r s"))[0] == "miss"


async def test_client_leaving_mid_stream_stores_nothing(stack: Stack) -> None:
    stack.upstream.chunk_delay_s = 0.1
    async with httpx.AsyncClient() as http:
        request = _ask("one two three four five", stream=True)
        async with http.stream("POST", stack.url + "/v1/chat/completions", json=request) as reply:
            async for _ in reply.aiter_bytes():
                break  # first chunk only, then hang up
    await asyncio.sleep(0.3)
    await _settled(stack)
    assert stack.cache.exact == {}
    stack.upstream.chunk_delay_s = 0.0
    assert (await _chat(_client(stack), "one two three four five"))[0] == "miss"


async def test_upstream_that_stops_answering_is_504(make_stack: Any) -> None:
    async with make_stack(upstream_timeout_s=0.2) as stack:
        stack.upstream.delay_s = 1.0
        with pytest.raises(openai.APIStatusError) as caught:
            await _chat(_client(stack), "slow")
        assert caught.value.status_code == 504


async def test_real_cache_with_redis_unreachable_fails_soft(make_stack: Any) -> None:
    """The real ResponseCache on a Redis port nobody listens on: every request still works."""
    from cache.redis_client import connect_redis
    from cache.response_cache import ResponseCache
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from tests.gateway.fakes import UpstreamControl, fake_upstream, free_port, serving

    control = UpstreamControl()
    redis = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    async with (
        ResponseCache(redis, embedder=None, semantic_enabled=False) as cache,
        serving(fake_upstream(control)) as upstream_url,
    ):
        settings = GatewaySettings(upstreams=[upstream_url], admin_token="a")
        async with serving(create_app(settings, cache=cache)) as url:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
            for _ in range(3):
                raw = await client.chat.completions.with_raw_response.create(**_ask("down"))
                assert raw.headers["x-cache"] == "miss"
                assert raw.parse().choices[0].message.content == "echo: down"
            stream = await client.chat.completions.create(**_ask("down", stream=True))
            assert [c async for c in stream]
            async with httpx.AsyncClient() as http:
                ready = await http.get(url + "/ready")
                stats = await http.get(url + "/admin/stats", headers={"authorization": "Bearer a"})
            assert ready.status_code == 503 and ready.json()["redis"] is False
            assert stats.status_code == 200
            assert stats.json()["gateway"]["since_start"]["overall"]["misses"] == 4
    await redis.aclose()


async def test_client_gone_before_the_stream_starts_leaves_nothing_hanging() -> None:
    """The response's first send fails: the upstream stream is closed and the flight settled."""
    from starlette.requests import ClientDisconnect

    from gateway.app import create_app
    from gateway.services import Services
    from gateway.settings import GatewaySettings
    from tests.gateway.fakes import FakeResponseCache, UpstreamControl, fake_upstream, serving

    control = UpstreamControl()
    async with serving(fake_upstream(control)) as upstream_url:
        app = create_app(GatewaySettings(upstreams=[upstream_url]), cache=FakeResponseCache())
        async with app.router.lifespan_context(app) as state:
            body = json.dumps(_ask("gone early", stream=True)).encode()
            scope = {
                "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 2), "state": dict(state),
                "headers": [(b"content-type", b"application/json")],
            }  # fmt: skip
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.sleep(3600)
                return {"type": "http.disconnect"}

            async def send(message: Any) -> None:
                raise OSError("client went away")

            with pytest.raises(ClientDisconnect):
                await app(scope, receive, send)
            services: Services = state["services"]
            assert len(services.flights) == 0
            assert services.upstream.outstanding() == {upstream_url: 0}
            since = (await services.stats.snapshot())["since_start"]["overall"]
            assert since["errors"] == 1
