"""Tenants never see each other's answers, and tenant keys never open admin routes: through the
gateway's HTTP routes with the real ResponseCache (fakeredis and the real Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Route

from gateway.app import ROUTES, create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ADMIN, SharedRedis, real_gateway
from tests.gateway.fakes import UpstreamControl, fake_upstream, serving

KEYS = "sk-a=team-a,sk-b=team-b"
QUESTION = "how do I reset the router in the lobby"
# The word-overlap embedder and a verifier that allows every candidate above the threshold
# would serve each of these from the same tenant's entry (the first is an exact repeat).
NEAR_DUPLICATES = [
    QUESTION,
    "How do I reset the router in the lobby?",
    "in the lobby how do I reset the router",
    "how do I reset the router in the lobby please",
]


async def _ask(
    http: httpx.AsyncClient, url: str, key: str, question: str, *, stream: bool = False
) -> tuple[str, str]:
    """A greedy chat request: (x-cache, the answer's id, which the upstream makes per call)."""
    body = {"model": "fake", "messages": [{"role": "user", "content": question}],
            "temperature": 0, "stream": stream}  # fmt: skip
    reply = await http.post(
        url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 200, reply.text
    if stream:
        first = reply.text.split("\n\n")[0].removeprefix("data: ")
        return reply.headers["x-cache"], json.loads(first)["id"]
    return reply.headers["x-cache"], reply.json()["id"]


async def _cached_ids(http: httpx.AsyncClient, url: str, key: str) -> set[str]:
    """Ids of the answers `key`'s tenant got for every near-duplicate, once all are cached."""
    ids = set()
    for question in NEAR_DUPLICATES:
        for _ in range(100):
            outcome, answer_id = await _ask(http, url, key, question)
            ids.add(answer_id)
            if outcome in ("hit", "semantic"):
                break
            await asyncio.sleep(0.02)  # stores land just after the answer
        else:
            raise AssertionError(f"{question!r} was never served from {key}'s cache")
    return ids


async def test_near_duplicates_never_cross_tenants(shared_redis: SharedRedis) -> None:
    control = UpstreamControl()
    async with (
        serving(fake_upstream(control)) as upstream,
        # Without speculative calls, the upstream counts only the calls that answered.
        real_gateway(shared_redis, upstream, api_keys=KEYS, speculative_upstream=False) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        a_ids = await _cached_ids(http, url, "sk-a")
        assert control.calls == 1  # team-a's near-duplicates were all served by its entry
        for stream in (False, True):
            for question in NEAR_DUPLICATES:
                outcome, answer_id = await _ask(http, url, "sk-b", question, stream=stream)
                assert answer_id not in a_ids, (question, stream)
                assert outcome in ("miss", "hit", "semantic")  # its own, once stored
        b_ids = await _cached_ids(http, url, "sk-b")
        assert not a_ids & b_ids
        assert await _cached_ids(http, url, "sk-a") <= a_ids  # team-a still gets its own


async def test_a_replica_that_learnt_another_tenants_entries_never_serves_them(
    shared_redis: SharedRedis, upstream_url: str
) -> None:
    async with (
        real_gateway(shared_redis, upstream_url, api_keys=KEYS) as first,
        real_gateway(shared_redis, upstream_url, api_keys=KEYS) as second,
        httpx.AsyncClient(timeout=10) as http,
    ):
        a_ids = await _cached_ids(http, first, "sk-a")
        await asyncio.sleep(0.3)  # six polls of the replica sync
        # The second replica has A's entries in its index: A's near-duplicates hit there too.
        assert await _cached_ids(http, second, "sk-a") == a_ids
        for question in NEAR_DUPLICATES:
            assert (await _ask(http, second, "sk-b", question))[1] not in a_ids


async def test_identical_requests_in_flight_are_not_shared_across_tenants(
    shared_redis: SharedRedis,
) -> None:
    control = UpstreamControl(delay_s=0.3)
    async with (
        serving(fake_upstream(control)) as upstream,
        real_gateway(shared_redis, upstream, api_keys=KEYS) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        answers = await asyncio.gather(
            *(_ask(http, url, key, QUESTION) for key in ("sk-a", "sk-b", "sk-a", "sk-b"))
        )
    assert control.calls == 2  # one per tenant: each tenant's pair shared one call
    assert answers[0][1] == answers[2][1] and answers[1][1] == answers[3][1]
    assert answers[0][1] != answers[1][1]


def _admin_requests() -> Iterator[tuple[str, str]]:
    """(method, path) of every admin route that needs the token, read from the route table so
    that a route added later is covered too. The page and its static files hold no data."""
    for route in ROUTES:
        assert isinstance(route, Route)
        if not route.path.startswith("/admin/") or route.path.startswith("/admin/static/"):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            yield method, route.path.replace("{hit_id}", "0123456789abcdef.1-0")


@pytest.mark.parametrize(
    ("keys", "admin_token"),
    [(KEYS, ADMIN), (KEYS, None), (None, ADMIN), (None, None)],
    ids=["keys+admin", "keys-only", "open+admin", "open"],
)
async def test_tenant_keys_never_open_admin_routes(
    shared_redis: SharedRedis, upstream_url: str, keys: str | None, admin_token: str | None
) -> None:
    requests = list(_admin_requests())
    assert len(requests) >= 7
    async with (
        real_gateway(shared_redis, upstream_url, api_keys=keys, admin_token=admin_token) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        for method, path in requests:
            for authorization in ("Bearer sk-a", "Bearer sk-b", "sk-a", "Bearer", None):
                headers = {"authorization": authorization} if authorization else {}
                reply = await http.request(method, url + path + "?all=true", headers=headers)
                assert reply.status_code == 401, (method, path, authorization)
                assert reply.json()["error"]["type"] == "invalid_request_error"
            if admin_token is not None:  # the token itself does open them
                headers = {"authorization": f"Bearer {admin_token}"}
                reply = await http.request(method, url + path, headers=headers)
                assert reply.status_code != 401, (method, path)


def test_an_admin_token_that_is_also_an_api_key_is_refused() -> None:
    settings = GatewaySettings(api_keys="sk-a=team-a,sk-root=ops", admin_token="sk-root")
    with pytest.raises(ValueError) as refused:
        create_app(settings)
    assert "sk-root" not in str(refused.value)
