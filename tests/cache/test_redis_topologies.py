"""The whole ResponseCache on a real Redis Cluster and a real Sentinel set-up.

Every behaviour test of test_response_cache.py and test_feedback.py runs here again (store
and exact lookup, semantic lookup, namespace isolation, TTL, LRU bound, invalidation, paged
listing, stats, replica sync, the semantic-hit log and wrong reports), through
`redis+cluster://` and `redis+sentinel://` URLs: this module's `redis` fixture replaces the
fakeredis / standalone one for them. Then what only these topologies have: namespaces spread
over cluster nodes, and a Sentinel fail-over.

Each topology is started once for the module (a few seconds); the fail-over test starts its
own, since it changes who is master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from cache.keys import namespace_hash
from cache.redis_client import RedisClient, connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.verifier import AllowAll
from tests.cache import test_feedback, test_response_cache
from tests.cache.conftest import CacheFactory, answer, assert_fails_open, chat
from tests.cache.fakes import FakeEmbedder
from tests.cache.topologies import (
    LocalCluster,
    LocalSentinel,
    plain_client,
    redis_cluster,
    redis_sentinel,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The behaviour tests, collected again in this module so they run on each topology below.
for _module in (test_response_cache, test_feedback):
    globals().update(
        {name: test for name, test in vars(_module).items() if name.startswith("test_")}
    )


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def topology_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """REDIS_URL of a Redis Cluster (3 masters) or of a Sentinel-watched master."""
    if request.param == "cluster":
        with redis_cluster() as cluster:
            yield cluster.url
    else:
        with redis_sentinel() as sentinel:
            yield sentinel.url


@pytest.fixture
async def redis(topology_url: str, prefix: str) -> AsyncIterator[RedisClient]:
    """A client through the topology's URL; this test's keys are removed after it."""
    client = connect_redis(topology_url, timeout_s=2.0)
    yield client
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()


async def eventually(check: Callable[[], bool], timeout_s: float = 1.0) -> bool:
    """Polls `check` until it holds or `timeout_s` passes (replica sync is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


NAMESPACES = [f"tenant-{i}" for i in range(6)]


async def test_namespaces_on_several_nodes_work_as_one_cache(
    make_cache: CacheFactory, redis: RedisClient, prefix: str
) -> None:
    """On Cluster, namespaces live on different nodes: listing, paging, invalidation, index
    rebuild and stats must still see all of them (on Sentinel this is one more round)."""
    first = await make_cache(similarity_threshold=0.9)
    ids = {}
    for i, ns in enumerate(NAMESPACES):
        model = "m1" if i % 2 else "m2"
        entry_id = await first.store(
            ns, "chat", chat(f"capital of country {i}", model=model), answer(ns)
        )
        assert entry_id is not None
        ids[ns] = entry_id
    if isinstance(redis, RedisCluster):
        # The hash tag keeps a namespace in one slot; the namespaces themselves spread out.
        store = first.entries_store
        nodes = set()
        for ns in NAMESPACES:
            nsh = namespace_hash(ns)
            slots = {
                redis.keyslot(k)
                for k in (
                    store.entry_key(nsh, ids[ns].split(".")[1]),
                    store.lru_key(nsh),
                    store.exp_key(nsh),
                )
            }
            assert len(slots) == 1
            nodes.add(_node_of(redis, store.lru_key(nsh)))
        assert len(nodes) >= 2

    # A fresh instance finds every namespace's entries, on whichever node they are.
    second = await make_cache(similarity_threshold=0.9)
    assert len(second.index) == len(NAMESPACES)
    for i, ns in enumerate(NAMESPACES):
        hit = await second.lookup(
            ns, "chat", chat(f"country {i} capital of", model="m1" if i % 2 else "m2")
        )
        assert hit is not None and hit.kind == "semantic" and hit.response == answer(ns)

    listed = await second.entries(limit=100)
    assert sorted(e.namespace for e in listed) == NAMESPACES
    paged = [e.entry_id for p in range(3) for e in await second.entries(offset=2 * p, limit=2)]
    assert paged == [e.entry_id for e in listed]

    assert await second.invalidate(model="m1") == 3
    assert await first.lookup("tenant-1", "chat", chat("capital of country 1", model="m1")) is None
    assert await eventually(lambda: len(first.index) == 3)
    assert await second.invalidate() == 3
    assert await second.entries() == []

    await second.stats_store.record("tenant-0", "m2", "exact", latency_ms=1.0)
    assert (await second.stats_store.read()).since_start.count("exact") == 1
    # Older per-minute hashes, enough of them to sit on every node: clear() must SCAN all.
    minutes = [f"{prefix}:stats:m:{m}" for m in range(1, 31)]
    for key in minutes:
        await redis.hset(key, "c\x1fns\x1fm\x1fmiss", 1)  # type: ignore[misc]
    if isinstance(redis, RedisCluster):
        assert {_node_of(redis, k) for k in minutes} == {n.name for n in redis.get_primaries()}
    await second.stats_store.clear()
    assert (await second.stats_store.read()).since_start.cells == {}
    assert [k async for k in redis.scan_iter(match=f"{prefix}:stats:*")] == []


def _node_of(cluster: RedisCluster, key: str) -> str:
    node = cluster.get_node_from_key(key)
    assert node is not None
    return node.name


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own, to stop and restart."""
    with redis_cluster() as cluster:
        yield cluster


async def test_cluster_outage_fails_open_and_recovers(
    own_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Every node stopped: misses, dropped stores, one warning, no exception (also for a
    cache opened meanwhile); restarted: caching resumes by itself."""
    options: dict[str, Any] = {
        "embedder": FakeEmbedder(),
        "verifier": AllowAll(0.57),
        "similarity_threshold": 0.9,
        "op_timeout_s": 0.3,
        "probe_interval_s": 0.05,
        "sync_interval_s": 0.05,
    }
    client = connect_redis(own_cluster.url, timeout_s=0.5)
    late_client = connect_redis(own_cluster.url, timeout_s=0.5)
    body = chat("what time is it in Tokyo")
    async with ResponseCache(client, **options) as cache:
        assert await cache.store("ns", "chat", body, answer("x")) is not None
        assert await cache.lookup("ns", "chat", body) is not None

        own_cluster.stop()
        await assert_fails_open(cache, body, caplog, rounds=3)

        async with ResponseCache(late_client, **options) as late:  # opened during the outage
            assert await late.lookup("ns", "chat", body) is None

            own_cluster.restart()  # same slots, no data
            for resumed in (cache, late):
                stored = None
                deadline = time.monotonic() + 5
                while stored is None and time.monotonic() < deadline:
                    stored = await resumed.store("ns", "chat", body, answer("again"))
                    await asyncio.sleep(0.05)
                assert stored is not None
                hit = await resumed.lookup("ns", "chat", chat("in Tokyo what time is it"))
                assert hit is not None and hit.response == answer("again")
    await client.aclose()
    await late_client.aclose()


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    """A Sentinel set-up of this test's own: the fail-over changes who is master."""
    with redis_sentinel() as setup:
        yield setup


async def test_sentinel_fail_over_is_followed(
    sentinel: LocalSentinel, caplog: pytest.LogCaptureFixture
) -> None:
    """The master dies; while Sentinel promotes the replica the cache serves misses, then it
    finds the new master by itself and the entries stored before are still there."""
    client = connect_redis(sentinel.url, timeout_s=1.0)
    async with ResponseCache(
        client,
        embedder=FakeEmbedder(),
        verifier=AllowAll(0.57),
        similarity_threshold=0.9,
        op_timeout_s=0.5,
        probe_interval_s=0.05,
        sync_interval_s=0.05,
    ) as cache:
        before = chat("stored before the fail-over")
        assert await cache.store("ns", "chat", before, answer("old master")) is not None
        # The replica has the entry before it is promoted (WAIT: acknowledged by one replica).
        assert await client.execute_command("WAIT", 1, 2000) == 1

        with caplog.at_level(logging.WARNING, logger="sluice.cache"):
            promotion = asyncio.create_task(asyncio.to_thread(sentinel.crash_master))
            while not promotion.done():  # no master at all for about 2 s
                assert await cache.lookup("ns", "chat", chat("asked during the outage")) is None
                await asyncio.sleep(0.05)
            new_master = await promotion

            after = chat("stored after the fail-over")
            stored = None
            deadline = time.monotonic() + 5
            while stored is None and time.monotonic() < deadline:
                stored = await cache.store("ns", "chat", after, answer("new master"))
                if stored is None:
                    await asyncio.sleep(0.05)
        assert stored is not None
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in m for m in messages) == 1
        assert any("back after" in m for m in messages)

        with plain_client(new_master) as direct:
            assert direct.exists(cache.entries_store.key_of(stored) or "") == 1
        for body, text in ((before, "old master"), (after, "new master")):
            hit = await cache.lookup("ns", "chat", body)
            assert hit is not None and hit.response == answer(text)
        hit = await cache.lookup("ns", "chat", chat("before the fail-over stored"))
        assert hit is not None and hit.kind == "semantic"
    await client.aclose()
