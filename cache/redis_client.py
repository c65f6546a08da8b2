"""Builds the redis.asyncio client for REDIS_URL: standalone, TLS, Cluster, Sentinel, in-process."""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import fakeredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from cache.errors import ConfigError

RedisClient: TypeAlias = "Redis | RedisCluster"

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = {"redis+sentinel", "rediss+sentinel"}


def _no_retry() -> Retry:
    """The cache fails open instead of retrying: a retry would only hold a request longer."""
    return Retry(NoBackoff(), 0)


def connect_redis(
    url: str | None,
    *,
    timeout_s: float = 1.0,
    cluster: bool = False,
    max_connections: int | None = None,
) -> RedisClient:
    """A client for `url`; None gives an in-process fakeredis server (one per call).

    Schemes: `redis://`, `rediss://` (TLS), `unix://`; `redis+cluster://host:port` or
    `cluster=True` for Redis Cluster; `redis+sentinel://[:password@]host:port[,host:port]
    /service_name[/db]` for Sentinel (`rediss+sentinel` for TLS). `timeout_s` bounds socket
    connects and reads; the cache puts its own, shorter per-operation timeout on top.
    `max_connections` bounds the pool (redis-py's default, 100, refuses more at once).
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": False,
    }
    if max_connections is not None:
        common["max_connections"] = max_connections
    if url is None:
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES or cluster:
        plain = CLUSTER_SCHEMES.get(scheme, scheme)
        return RedisCluster.from_url(plain + url[len(scheme) :], **common)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(url, scheme, common)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"unsupported Redis URL scheme {scheme!r}")
    return Redis.from_url(url, retry=_no_retry(), **common)


def _sentinel_master(url: str, scheme: str, common: dict[str, Any]) -> Redis:
    """Resolves the master through Sentinel, following fail-overs."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError("a sentinel URL needs the service name: redis+sentinel://h:p/name")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    hosts: list[tuple[str, int]] = []
    for item in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, Any] = {**common, "db": db, "password": password, "username": username}
    if scheme == "rediss+sentinel":
        kwargs["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        sentinel_kwargs={
            "socket_timeout": common["socket_timeout"],
            "password": options.get("sentinel_password"),
        },
        **kwargs,
    )
    master: Redis = sentinel.master_for(service, retry=_no_retry())
    return master
