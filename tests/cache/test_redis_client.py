"""connect_redis picks the right redis-py client for each kind of URL."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from cache.errors import ConfigError
from cache.redis_client import connect_redis


async def test_none_is_an_in_process_server() -> None:
    client = connect_redis(None)
    await client.set("k", "v")
    assert await client.get("k") == b"v"
    assert await connect_redis(None).get("k") is None  # each call has its own server
    await client.aclose()


def test_url_kinds() -> None:
    plain = connect_redis("redis://127.0.0.1:6379/3", timeout_s=0.1, max_connections=7)
    assert isinstance(plain, Redis) and plain.connection_pool.max_connections == 7
    tls = connect_redis("rediss://example.invalid:6380/0")
    assert tls.connection_pool.connection_kwargs["host"] == "example.invalid"
    cluster = connect_redis("redis+cluster://127.0.0.1:7000")
    assert isinstance(cluster, RedisCluster)
    assert isinstance(connect_redis("redis://127.0.0.1:7000", cluster=True), RedisCluster)
    sentinel = connect_redis("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/2")
    assert isinstance(sentinel, Redis)
    assert sentinel.connection_pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert sentinel.connection_pool.connection_kwargs["db"] == 2
    with pytest.raises(ConfigError):
        connect_redis("memcached://x")
    with pytest.raises(ConfigError):
        connect_redis("redis+sentinel://10.0.0.1:26379")
