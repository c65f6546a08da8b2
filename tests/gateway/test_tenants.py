"""Per-tenant semantic settings (from the key lines), through the gateway's HTTP routes, with the
real ResponseCache on fakeredis and on the real Redis."""

from __future__ import annotations

from tests.gateway.conftest import SharedRedis, ask, real_gateway, stored

KEYS = "sk-acme=acme,sk-globex=globex semantic=off,sk-initech=initech semantic_threshold=0.95"
STORED = "cheap flights to Paris in May"
REWORDED = "in May cheap flights to Paris"  # the same words: cosine 1.0 with the fake embedder
LONGER = "cheap flights to Paris in May please"  # cosine 0.926: above 0.8, below 0.95


async def test_a_tenant_with_semantic_off_gets_exact_hits_only(
    shared_redis: SharedRedis, upstream_url: str
) -> None:
    async with real_gateway(shared_redis, upstream_url, api_keys=KEYS) as url:
        for key in ("sk-globex", "sk-acme"):
            assert (await ask(url, key, STORED))[0] == "miss"
            await stored(url, key, STORED)
        assert (await ask(url, "sk-acme", REWORDED))[:2] == ("semantic", f"echo: {STORED}")
        assert (await ask(url, "sk-globex", REWORDED))[:2] == ("miss", f"echo: {REWORDED}")
        await stored(url, "sk-globex", REWORDED)  # its own answer, an exact hit from now on


async def test_a_stricter_tenant_threshold_refuses_a_pair_the_default_accepts(
    shared_redis: SharedRedis, upstream_url: str
) -> None:
    async with real_gateway(shared_redis, upstream_url, api_keys=KEYS) as url:
        for key in ("sk-initech", "sk-acme"):
            assert (await ask(url, key, STORED))[0] == "miss"
            await stored(url, key, STORED)
        assert (await ask(url, "sk-acme", LONGER))[:2] == ("semantic", f"echo: {STORED}")
        assert (await ask(url, "sk-initech", LONGER))[:2] == ("miss", f"echo: {LONGER}")
        # Rewordings closer than its threshold are still matched for the strict tenant.
        assert (await ask(url, "sk-initech", REWORDED))[:2] == ("semantic", f"echo: {STORED}")
