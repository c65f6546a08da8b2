"""The long-lived parts one gateway process shares between requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cache.feedback import SemanticHit
from cache.identity import RequestIdentity
from cache.redis_client import RedisClient
from cache.response_cache import CacheHit, Endpoint, EntryInfo
from gateway.auth import Authenticator, TenantSettings
from gateway.flight import SingleFlight
from gateway.limits import RateLimiter, TenantLimits
from gateway.metrics import GatewayMetrics
from gateway.stats import RequestStats
from gateway.upstream import UpstreamPool

log = logging.getLogger("sluice.gateway")


class Cache(Protocol):
    """What the gateway needs of `cache.ResponseCache` (see cache/response_cache.py)."""

    # The request statistics (gateway/stats.py) are kept on the cache's Redis, under its prefix.
    redis: RedisClient
    key_prefix: str

    async def lookup(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        *,
        exact: bool = True,
        semantic: bool = True,
        similarity_threshold: float | None = None,
        identity: RequestIdentity | None = None,
    ) -> CacheHit | None: ...

    async def store(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        response: dict[str, Any],
        *,
        ttl_s: int | None = None,
        semantic: bool = True,
        identity: RequestIdentity | None = None,
    ) -> str | None: ...

    async def invalidate(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        entry_id: str | None = None,
    ) -> int: ...

    async def entries(
        self, *, namespace: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[EntryInfo]: ...

    async def semantic_hits(
        self, *, namespace: str | None = None, limit: int = 50
    ) -> list[SemanticHit]: ...

    async def mark_wrong(self, hit_id: str) -> SemanticHit | None: ...

    async def negatives(
        self, *, namespace: str | None = None, limit: int = 1000
    ) -> list[SemanticHit]: ...

    async def ping(self) -> bool: ...


@dataclass(kw_only=True)
class Services:
    """Everything a request handler reaches through `request.state.services`."""

    cache: Cache
    upstream: UpstreamPool
    auth: Authenticator
    max_body_bytes: int
    default_ttl_s: int
    max_ttl_s: int
    semantic: bool = True
    tenants: Mapping[str, TenantSettings] = field(default_factory=dict)
    cache_timeout_s: float = 2.0
    cache_sampled: bool = False
    speculate: bool = True
    stream_usage: bool = True
    log_bodies: bool = False
    flights: SingleFlight = field(default_factory=SingleFlight)
    stats: RequestStats
    metrics: GatewayMetrics
    # None: no limits configured at all (Redis is then never asked).
    limiter: RateLimiter | None = None
    default_limits: TenantLimits = field(default_factory=TenantLimits)
    # Strong references keep fire-and-forget tasks (stores, stat records) from being collected.
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _cache_failing: bool = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs work after the answer is sent, holding a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cache_failed(self, what: str, exc: BaseException) -> None:
        """Logs a cache failure once per outage; requests carry on without the cache."""
        if not self._cache_failing:
            self._cache_failing = True
            log.warning("cache %s failed (%s); serving from upstream", what, type(exc).__name__)

    def cache_ok(self) -> None:
        if self._cache_failing:
            self._cache_failing = False
            log.warning("cache answers again")

    def semantic_for(self, tenant: str) -> bool:
        """Whether this tenant's questions are matched by meaning (exact caching only if not)."""
        own = self.tenants.get(tenant)
        return self.semantic and (own is None or own.semantic is not False)

    def limits_for(self, tenant: str) -> TenantLimits:
        """The tenant's limits: those on its key lines, else the gateway's defaults."""
        own = self.tenants.get(tenant)
        return self.default_limits if own is None else own.limits.over(self.default_limits)

    async def lookup(
        self, identity: RequestIdentity, *, exact: bool = True, semantic: bool = True
    ) -> CacheHit | None:
        """Cache lookup that never fails the request: errors and slowness count as a miss.

        exact, semantic: which stages to run (semantic only where the gateway and the tenant
        enable it, at the tenant's threshold if it has a stricter one).
        """
        tenant = identity.namespace
        own = self.tenants.get(tenant)
        try:
            async with asyncio.timeout(self.cache_timeout_s):
                hit = await self.cache.lookup(
                    tenant,
                    identity.endpoint,
                    identity.body,
                    exact=exact,
                    semantic=semantic and self.semantic_for(tenant),
                    similarity_threshold=own.semantic_threshold if own else None,
                    identity=identity,
                )
        except Exception as exc:
            self.cache_failed("lookup", exc)
            return None
        self.cache_ok()
        return hit

    async def store(self, identity: RequestIdentity, answer: dict[str, Any], ttl: int) -> None:
        """Stores an answer, dropping it quietly if the cache is unavailable."""
        tenant = identity.namespace
        try:
            await self.cache.store(
                tenant,
                identity.endpoint,
                identity.body,
                answer,
                ttl_s=ttl,
                semantic=self.semantic_for(tenant),
                identity=identity,
            )
        except Exception as exc:
            self.cache_failed("store", exc)

    async def aclose(self) -> None:
        """Lets pending stores finish (briefly) before the cache closes."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
