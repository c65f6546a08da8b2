"""Balancing across upstreams and failing over, against real servers on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.upstream import UpstreamPool, UpstreamStreamCut
from tests.gateway.fakes import UpstreamControl, fake_upstream, free_port, serving


def _upstream(
    name: str,
    seen: list[str],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    gate: asyncio.Event | None = None,
) -> Starlette:
    """A server that notes each request in `seen` under `name` and answers `status`."""

    async def answer(request: Request) -> Response:
        seen.append(name)
        if gate is not None:
            await gate.wait()
        return JSONResponse({"from": name}, status_code=status, headers=headers)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


@contextlib.asynccontextmanager
async def _serving(*apps: Starlette) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serving(app)) for app in apps]


def _nobody() -> str:
    """An upstream URL whose connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


async def test_idle_upstreams_share_the_load() -> None:
    seen: list[str] = []
    apps = [_upstream(name, seen) for name in "ABC"]
    async with _serving(*apps) as urls, UpstreamPool(urls) as pool:
        for _ in range(30):
            await pool.request("GET", "/x")
    assert Counter(seen) == {"A": 10, "B": 10, "C": 10}


async def test_least_outstanding_gets_the_next_request() -> None:
    seen: list[str] = []
    gate = asyncio.Event()
    apps = [_upstream(name, seen, gate=gate) for name in "AB"]
    async with _serving(*apps) as urls, UpstreamPool(urls) as pool:
        held = [asyncio.create_task(pool.request("GET", "/x")) for _ in range(3)]
        await asyncio.sleep(0.05)
        # Three in flight: the split must be 2/1, never 3/0.
        assert sorted(pool.outstanding().values()) == [1, 2]
        gate.set()
        await asyncio.gather(*held)
        assert pool.outstanding() == dict.fromkeys(urls, 0)
    assert sorted(Counter(seen).values()) == [1, 2]


async def test_connection_failure_is_retried_on_another_upstream() -> None:
    seen: list[str] = []
    async with _serving(_upstream("B", seen)) as (b,), UpstreamPool([_nobody(), b]) as pool:
        replies = [await pool.request("GET", "/x") for _ in range(4)]
    assert {r.upstream for r in replies} == {b}
    assert seen == ["B"] * 4


async def test_all_down_is_upstream_unavailable() -> None:
    urls = [_nobody(), _nobody()]
    async with UpstreamPool(urls) as pool:
        with pytest.raises(UpstreamUnavailable):
            await pool.request("POST", "/v1/completions", content=b"{}")
        assert await pool.probe() == dict.fromkeys(urls, False)
        assert pool.outstanding() == dict.fromkeys(urls, 0)


@pytest.mark.parametrize("status", [503, 429])
async def test_draining_or_full_upstream_is_retried_on_another(status: int) -> None:
    seen: list[str] = []
    apps = [_upstream("A", seen, status=status, headers={"retry-after": "1"}), _upstream("B", seen)]
    async with _serving(*apps) as (a, b), UpstreamPool([a, b]) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
        assert (reply.status_code, reply.upstream) == (200, b)
        # A is passed over for a moment, so the next request goes straight to B.
        assert (await pool.request("POST", "/v1/completions", content=b"{}")).upstream == b
        assert pool.outstanding() == {a: 0, b: 0}
    assert seen[0] in ("A", "B") and seen.count("A") <= 1


async def test_when_all_refuse_the_last_answer_passes_through_with_retry_after() -> None:
    seen: list[str] = []
    apps = [
        _upstream("A", seen, status=503, headers={"retry-after": "1"}),
        _upstream("B", seen, status=429, headers={"retry-after": "7"}),
    ]
    async with _serving(*apps) as urls, UpstreamPool(urls) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert len(seen) == 2
    last = {"A": (503, "1"), "B": (429, "7")}[seen[-1]]
    assert (reply.status_code, reply.retry_after) == last


async def test_a_refusing_answer_is_retried_only_once() -> None:
    seen: list[str] = []
    apps = [_upstream(name, seen, status=503) for name in "ABC"]
    async with _serving(*apps) as urls, UpstreamPool(urls) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert reply.status_code == 503
    assert len(seen) == 2


async def test_other_errors_are_not_retried() -> None:
    seen: list[str] = []
    apps = [_upstream(name, seen, status=500) for name in "AB"]
    async with _serving(*apps) as urls, UpstreamPool(urls) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert reply.status_code == 500
    assert len(seen) == 1


def _ticking(gaps_s: list[float]) -> Starlette:
    """Streams one chunk, then one more after each of `gaps_s`."""

    async def answer(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 0\n\n"
            for n, gap in enumerate(gaps_s, 1):
                await asyncio.sleep(gap)
                yield f"data: {n}\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


async def test_the_read_timeout_is_between_chunks_not_for_the_whole_answer() -> None:
    # Five gaps of 0.1 s: 0.5 s in all, past the 0.3 s read timeout, yet no gap reaches it.
    async with (
        _serving(_ticking([0.1] * 5)) as urls,
        UpstreamPool(urls, read_timeout_s=0.3) as pool,
        pool.stream("GET", "/x") as response,
    ):
        chunks = [chunk async for chunk in response.chunks()]
    assert b"".join(chunks) == b"".join(f"data: {n}\n\n".encode() for n in range(6))


async def test_a_stream_that_stalls_times_out() -> None:
    async with _serving(_ticking([1.0])) as urls, UpstreamPool(urls, read_timeout_s=0.2) as pool:
        async with pool.stream("GET", "/x") as response:
            with pytest.raises(UpstreamStreamCut, match="read timed out"):
                async for _ in response.chunks():
                    pass
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", "/x")
        assert pool.outstanding() == dict.fromkeys(urls, 0)


async def test_a_stream_arrives_chunk_by_chunk() -> None:
    async with (
        _serving(_ticking([0.2, 0.2])) as urls,
        UpstreamPool(urls) as pool,
        pool.stream("POST", "/x", content=b"{}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.upstream == urls[0]
        arrivals = []
        async for chunk in response.chunks():
            arrivals.append((chunk, asyncio.get_running_loop().time()))
    assert [chunk for chunk, _ in arrivals] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert arrivals[-1][1] - arrivals[0][1] >= 0.35


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Yields to the loop until `condition` holds, or fails after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _completion_stream() -> bytes:
    return json.dumps({"model": "fake", "prompt": "one two three four", "stream": True}).encode()


async def test_leaving_a_stream_midway_closes_the_connection() -> None:
    control = UpstreamControl(chunk_delay_s=0.1)
    async with serving(fake_upstream(control)) as url, UpstreamPool([url]) as pool:
        async with pool.stream("POST", "/v1/completions", content=_completion_stream()) as answer:
            async for _ in answer.chunks():
                break
        await until(lambda: control.left_early > 0)
        assert control.left_early == 1
        assert pool.outstanding() == {url: 0}


async def test_cancelling_a_call_in_flight_closes_the_connection() -> None:
    control = UpstreamControl(delay_s=2.0)
    async with serving(fake_upstream(control)) as url, UpstreamPool([url]) as pool:
        body = json.dumps({"model": "fake", "prompt": "hi"}).encode()
        call = asyncio.create_task(pool.request("POST", "/v1/completions", content=body))
        await until(lambda: bool(control.calls))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: control.left_early > 0)
        assert control.left_early == 1
        assert pool.outstanding() == {url: 0}


async def test_the_api_key_goes_to_every_upstream_and_probes_see_health_and_metrics() -> None:
    controls = [UpstreamControl(required_key="up-secret") for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(fake_upstream(c))) for c in controls]
        pool = await stack.enter_async_context(UpstreamPool(urls, api_key="up-secret"))
        replies = [await pool.request("GET", "/v1/models") for _ in range(2)]
        assert {r.status_code for r in replies} == {200}
        assert {r.upstream for r in replies} == set(urls)
        assert await pool.probe() == dict.fromkeys(urls, True)
        texts = await pool.metrics_texts()
    assert all(c.authorizations == ["Bearer up-secret"] for c in controls)
    assert all(
        text is not None and "sluice_backend_queue_depth 2.0" in text for text in texts.values()
    )


async def test_a_pool_is_used_inside_async_with() -> None:
    pool = UpstreamPool([_nobody()])
    with pytest.raises(RuntimeError, match="async with"):
        await pool.request("GET", "/x")
    async with pool:
        with pytest.raises(RuntimeError, match="twice"):
            await pool.__aenter__()
