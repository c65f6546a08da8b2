"""Balancing across upstreams and failing over on connection errors."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from gateway.errors import UpstreamUnavailable
from gateway.upstream import UpstreamPool
from tests.gateway.fakes import free_port


def _transport(
    seen: list[str], *, refuse: set[str], gate: asyncio.Event | None = None
) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        host = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if host in refuse:
            raise httpx.ConnectError("refused", request=request)
        seen.append(host)
        if gate is not None:
            await gate.wait()
        return httpx.Response(200, json={"ok": host})

    return httpx.MockTransport(handler)


A, B, C = "http://a:1", "http://b:2", "http://c:3"


async def test_idle_upstreams_share_the_load() -> None:
    seen: list[str] = []
    async with UpstreamPool([A, B, C], transport=_transport(seen, refuse=set())) as pool:
        for _ in range(30):
            await pool.request("GET", "/x")
    assert Counter(seen) == {A: 10, B: 10, C: 10}


async def test_least_outstanding_gets_the_next_request() -> None:
    seen: list[str] = []
    gate = asyncio.Event()
    async with UpstreamPool([A, B], transport=_transport(seen, refuse=set(), gate=gate)) as pool:
        held = [asyncio.create_task(pool.request("GET", "/x")) for _ in range(3)]
        await asyncio.sleep(0.05)
        # Three in flight: the split must be 2/1, never 3/0.
        assert sorted(pool.outstanding().values()) == [1, 2]
        gate.set()
        await asyncio.gather(*held)
        assert pool.outstanding() == {A: 0, B: 0}


async def test_connection_failure_is_retried_on_another_upstream() -> None:
    seen: list[str] = []
    async with UpstreamPool([A, B], transport=_transport(seen, refuse={A})) as pool:
        replies = [await pool.request("GET", "/x") for _ in range(4)]
    assert {r.upstream for r in replies} == {B}
    assert seen == [B] * 4


async def test_all_down_is_upstream_unavailable() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with UpstreamPool(urls) as pool:
        with pytest.raises(UpstreamUnavailable):
            await pool.request("POST", "/v1/completions", content=b"{}")
        assert await pool.probe() == dict.fromkeys(urls, False)
        assert pool.outstanding() == dict.fromkeys(urls, 0)


def _statuses(
    answers: dict[str, tuple[int, dict[str, str]]], seen: list[str]
) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        host = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        seen.append(host)
        status, headers = answers.get(host, (200, {}))
        return httpx.Response(status, json={"from": host}, headers=headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [503, 429])
async def test_draining_or_full_upstream_is_retried_on_another(status: int) -> None:
    seen: list[str] = []
    transport = _statuses({A: (status, {"retry-after": "1"})}, seen)
    async with UpstreamPool([A, B], transport=transport) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
        assert (reply.status_code, reply.upstream) == (200, B)
        # A is passed over for a moment, so the next request goes straight to B.
        assert (await pool.request("POST", "/v1/completions", content=b"{}")).upstream == B
        assert pool.outstanding() == {A: 0, B: 0}
    assert seen[0] in (A, B) and seen.count(A) <= 1


async def test_when_all_refuse_the_last_answer_passes_through_with_retry_after() -> None:
    seen: list[str] = []
    transport = _statuses({A: (503, {"retry-after": "1"}), B: (429, {"retry-after": "7"})}, seen)
    async with UpstreamPool([A, B], transport=transport) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert len(seen) == 2
    last = {A: (503, "1"), B: (429, "7")}[seen[-1]]
    assert (reply.status_code, reply.retry_after) == last


async def test_a_refusing_answer_is_retried_only_once() -> None:
    seen: list[str] = []
    transport = _statuses({u: (503, {}) for u in (A, B, C)}, seen)
    async with UpstreamPool([A, B, C], transport=transport) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert reply.status_code == 503
    assert len(seen) == 2


async def test_other_errors_are_not_retried() -> None:
    seen: list[str] = []
    transport = _statuses({A: (500, {}), B: (500, {})}, seen)
    async with UpstreamPool([A, B], transport=transport) as pool:
        reply = await pool.request("POST", "/v1/completions", content=b"{}")
    assert reply.status_code == 500
    assert len(seen) == 1
