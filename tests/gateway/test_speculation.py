"""On an exact miss the upstream call starts while the semantic lookup runs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import Stack
from tests.gateway.fakes import sse_chunks

# Long enough that the upstream is still working when the semantic lookup ends.
UPSTREAM_S = 0.5
EMBEDDING_S = 0.05


def _ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": text}], "temperature": 0}


async def _post(stack: Stack, text: str, *, stream: bool = False) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        body = {**_ask(text), "stream": stream}
        return await http.post(stack.url + "/v1/chat/completions", json=body)


async def _metric(stack: Stack, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(stack.url + "/metrics")).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def _until(check: Any) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _seed(stack: Stack, question: str) -> None:
    """Stores one answer, then makes lookups slow the way an embedding is."""
    assert (await _post(stack, question)).headers["x-cache"] == "miss"
    await _until(lambda: len(stack.cache.exact) == 1)
    stack.cache.semantic_delay_s = EMBEDDING_S
    stack.upstream.delay_s = UPSTREAM_S


async def test_a_miss_reaches_upstream_before_the_semantic_lookup_ends(stack: Stack) -> None:
    stack.cache.semantic_delay_s = EMBEDDING_S
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="sk-x", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(**_ask("Where is Lyon?"))
    assert raw.headers["x-cache"] == "miss"
    assert raw.parse().choices[0].message.content == "echo: Where is Lyon?"
    assert stack.upstream.calls == 1
    assert stack.upstream.arrivals[0] < stack.cache.semantic_ends[0]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_semantic_hit_drops_the_upstream_call(stack: Stack, stream: bool) -> None:
    await _seed(stack, "Where is Paris?")
    reply = await _post(stack, "where is paris", stream=stream)
    assert reply.headers["x-cache"] == "semantic"
    text = (
        "".join(c["choices"][0]["delta"].get("content", "") for c in sse_chunks(reply.text))
        if stream
        else reply.json()["choices"][0]["message"]["content"]
    )
    assert text == "echo: Where is Paris?"
    # The upstream had the call, and saw its client leave before answering.
    assert stack.upstream.calls == 2
    await _until(lambda: stack.upstream.left_early == 1)
    assert await _metric(stack, "sluice_gateway_speculative_calls_dropped_total") == 1


async def test_identical_requests_during_the_lookup_share_the_cached_answer(
    stack: Stack,
) -> None:
    await _seed(stack, "Where is Paris?")
    replies = await asyncio.gather(*(_post(stack, "where is paris") for _ in range(3)))
    assert {r.json()["choices"][0]["message"]["content"] for r in replies} == {
        "echo: Where is Paris?"
    }
    # One led the lookup; the other two waited for it and are counted as semantic hits too.
    assert [r.headers["x-cache"] for r in replies] == ["semantic"] * 3
    assert len({r.headers["x-cache-entry"] for r in replies}) == 1
    assert stack.upstream.calls == 2  # the seed, and the one dropped speculative call


async def test_turned_off_the_upstream_is_called_only_after_a_semantic_miss(
    make_stack: Any,
) -> None:
    async with make_stack(speculative_upstream=False) as stack:
        await _seed(stack, "Where is Paris?")
        stack.upstream.delay_s = 0
        assert (await _post(stack, "where is paris")).headers["x-cache"] == "semantic"
        assert stack.upstream.calls == 1
        assert (await _post(stack, "Where is Lyon?")).headers["x-cache"] == "miss"
        assert stack.upstream.arrivals[-1] > stack.cache.semantic_ends[-1]
