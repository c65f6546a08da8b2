"""Feedback on semantic hits through the gateway's admin routes, with the real ResponseCache on
fakeredis and on the real Redis, shared by two gateways: the hit log, wrong reports, the count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.cli import main
from tests.gateway.conftest import ADMIN, SharedRedis, ask, real_gateway, stored

ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}
STORED = "cheap flights to Paris in May"
REWORDED = "in May cheap flights to Paris"  # the same words: cosine 1.0 with the fake embedder
LONGER = "cheap flights to Paris in May please"  # cosine 0.926: above 0.8, below 0.95
NO_STORE = {"cache-control": "no-store"}  # its own answer stays out: every ask looks up again


async def _admin(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS) as http:
        return await http.request(method, path, **kwargs)


async def _until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Polls `check` until it returns something truthy (hit logs and counts land just after
    the answer)."""
    for _ in range(100):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {what}")


async def test_a_hit_reported_wrong_is_never_served_again_on_any_replica(
    shared_redis: SharedRedis,
    upstream_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with real_gateway(shared_redis, upstream_url, api_keys="sk-acme=acme") as first:
        await ask(first, "sk-acme", STORED)
        await stored(first, "sk-acme", STORED)
        served = await ask(first, "sk-acme", REWORDED)
        assert served[:2] == ("semantic", f"echo: {STORED}")

        async def listed() -> list[dict[str, Any]]:
            reply = await _admin(first, "GET", "/admin/semantic-hits", params={"tenant": "acme"})
            return list(reply.json()["data"])

        (hit,) = await _until(listed, "the semantic hit in the listing")
        assert (hit["namespace"], hit["model"]) == ("acme", "fake")
        assert (hit["cached_question"], hit["new_question"]) == (STORED, REWORDED)
        assert hit["entry_id"] == served[2]["x-cache-entry"]
        assert hit["similarity"] == pytest.approx(1.0) and hit["score"] is None
        assert hit["wrong"] is False and hit["at"] > 0
        other = await _admin(first, "GET", "/admin/semantic-hits", params={"tenant": "globex"})
        assert other.json()["data"] == []
        async with httpx.AsyncClient() as http:
            path = f"/admin/semantic-hits/{hit['hit_id']}/wrong"
            assert (await http.post(first + path)).status_code == 401
            assert (await http.get(first + "/admin/semantic-hits")).status_code == 401

        marked = await _admin(first, "POST", f"/admin/semantic-hits/{hit['hit_id']}/wrong")
        assert marked.status_code == 200 and marked.json()["marked_wrong"]["wrong"] is True
        unknown = await _admin(first, "POST", "/admin/semantic-hits/0123abcd.1-0/wrong")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"

        # The same request is a miss from now on (no-store keeps its own answer out, so every
        # ask goes through the semantic lookup again), on this gateway and on another one.
        for _ in range(3):
            assert (await ask(first, "sk-acme", REWORDED, **NO_STORE))[:2] == (
                "miss",
                f"echo: {REWORDED}",
            )
        async with real_gateway(shared_redis, upstream_url, api_keys="sk-acme=acme") as second:
            # The second gateway does serve the entry to other questions...
            assert (await ask(second, "sk-acme", LONGER))[:2] == ("semantic", f"echo: {STORED}")
            # ...but not to the one reported wrong.
            for _ in range(3):
                assert (await ask(second, "sk-acme", REWORDED, **NO_STORE))[:2] == (
                    "miss",
                    f"echo: {REWORDED}",
                )

            negatives = await _admin(second, "GET", "/admin/semantic-negatives")
            (negative,) = negatives.json()["data"]
            assert (negative["namespace"], negative["scope"]) == ("acme", hit["scope"])
            assert (negative["cached_question"], negative["new_question"]) == (STORED, REWORDED)

            async def counted() -> dict[str, Any] | None:
                stats = (await _admin(second, "GET", "/admin/stats")).json()
                acme: dict[str, Any] = stats["gateway"]["since_start"]["per_tenant"]["acme"]
                return stats if acme["semantic_hits"] == 2 and acme["reported_wrong"] == 1 else None

            stats = await _until(counted, "1 reported wrong hit of 2 semantic hits for acme")
            assert stats["gateway"]["since_start"]["overall"]["reported_wrong"] == 1
            assert stats["gateway"]["since_start"]["per_tenant"]["acme"]["false_hit_rate"] == 0.5
            monkeypatch.setenv("SLUICE_GATEWAY_ADMIN_TOKEN", ADMIN)
            assert await asyncio.to_thread(main, ["stats", "--url", second]) == 0
    out = capsys.readouterr().out
    section = out.split("Semantic hits reported wrong (all gateways, since start)")[1]
    assert next(line for line in section.splitlines() if line.startswith("tenant acme")).split()[
        2:
    ] == ["2", "1", "50.0%"]
