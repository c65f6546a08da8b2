"""Redis key names are built from hashes only: after traffic of every kind through the gateway's
HTTP routes (misses, hits, semantic hits, streams, completions, wrong-hit reports, statistics),
every key under the test's prefix on the real Redis (and on fakeredis) has one of the known
shapes, and none carries a tenant's name, a model's name or a word of a question."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.gateway.conftest import ADMIN, SharedRedis, real_gateway
from tests.gateway.fakes import UpstreamControl, fake_upstream, serving

TENANTS = {"sk-a": "acme-corporation", "sk-b": "globex-industries"}
QUESTION = "which platypus ate the lighthouse sandwich"
PARAPHRASE = "the lighthouse sandwich which platypus ate"  # word overlap 1.0: semantic
WORDS = {*QUESTION.split(), "fake", *TENANTS.values()}
WORDS -= {"the", "which", "ate"}  # short words that could sit inside a hash by chance

HASH16, HASH32 = "[0-9a-f]{16}", "[0-9a-f]{32}"
SHAPES = {
    "entry": rf"\{{{HASH16}\}}:e:{HASH32}",
    "refused questions": rf"\{{{HASH16}\}}:refuse:{HASH32}",
    "lru": rf"\{{{HASH16}\}}:lru",
    "expiry": rf"\{{{HASH16}\}}:exp",
    "semantic hit log": rf"\{{{HASH16}\}}:hits",
    "reported wrong": rf"\{{{HASH16}\}}:wrong",
    "namespaces": "namespaces",
    "replica sync": "sync",
    "stats": "stats:all",
    "stats per minute": r"stats:m:\d+",
    "stats per 5 s": r"stats:s:\d+",
    "requests per minute": rf"rl:\{{{HASH16}\}}:r:\d+",
    "tokens per minute": rf"rl:\{{{HASH16}\}}:t:\d+",
    # No shape for `rl:{N}:c`, the upstream calls in progress: empty once every call gave its
    # slot back, it is gone, so a slot left behind shows up here as an unknown key.
}
# Limits high enough never to refuse: they only make the gateway write its counters.
LIMITS = "rpm=100000 tpm=100000000 concurrency=100"


async def _traffic(url: str) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(timeout=10) as http:
        for key in TENANTS:
            auth = {"authorization": f"Bearer {key}"}
            for path, field in (("/v1/chat/completions", "messages"), ("/v1/completions", "")):
                for stream in (False, True):
                    body: dict[str, object] = {"model": "fake", "temperature": 0, "stream": stream}
                    body[field or "prompt"] = (
                        [{"role": "user", "content": QUESTION}] if field else QUESTION
                    )
                    for _ in range(100):  # until stored
                        reply = await http.post(url + path, json=body, headers=auth)
                        if reply.headers["x-cache"] == "hit":
                            break
                        await asyncio.sleep(0.02)
            body = {"model": "fake", "temperature": 0,
                    "messages": [{"role": "user", "content": PARAPHRASE}]}  # fmt: skip
            reply = await http.post(url + "/v1/chat/completions", json=body, headers=auth)
            assert reply.headers["x-cache"] == "semantic"
        for _ in range(100):  # the hit log is written just after the answer
            hits = (await http.get(url + "/admin/semantic-hits", headers=admin)).json()["data"]
            if len(hits) == len(TENANTS):
                break
            await asyncio.sleep(0.02)
        for hit in hits:
            path = f"/admin/semantic-hits/{hit['hit_id']}/wrong"
            assert (await http.post(url + path, headers=admin)).status_code == 200


async def test_every_key_name_is_built_from_hashes(shared_redis: SharedRedis) -> None:
    keys = ",".join(f"{key}={tenant} {LIMITS}" for key, tenant in TENANTS.items())
    async with (
        serving(fake_upstream(UpstreamControl())) as upstream,
        real_gateway(shared_redis, upstream, api_keys=keys) as url,
    ):
        await _traffic(url)
    # Leaving the gateway flushed its request statistics to Redis.
    client = shared_redis.client()
    names = [k.decode() async for k in client.scan_iter(match=f"{shared_redis.prefix}:*")]
    seen: set[str] = set()
    for name in names:
        rest = name.removeprefix(shared_redis.prefix + ":")
        kinds = [kind for kind, shape in SHAPES.items() if re.fullmatch(shape, rest)]
        assert kinds, f"a key name of no known shape: {name}"
        seen.update(kinds)
        assert not [w for w in WORDS if w in name.lower()], name
    assert seen == set(SHAPES)  # every kind was written, so every kind was checked
    assert len({n for n in names if ":e:" in n}) == 2 * len(TENANTS)  # a stream shares JSON's
