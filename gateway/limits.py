"""Per-tenant rate limits shared by every gateway replica through Redis, so one tenant's flood
cannot take the upstreams from the others.

Layout (P = key prefix, N = the tenant's namespace hash, M = the minute since the epoch):
`P:rl:{N}:r:M` requests and `P:rl:{N}:t:M` upstream tokens in that minute (fixed windows,
expiring after two minutes), `P:rl:{N}:c` a sorted set of the tenant's upstream calls in
progress scored by when their lease runs out. The `{N}` hash tag keeps a tenant's keys on one
Cluster slot. When Redis is unreachable every limit is open (see cache/failopen.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from cache.failopen import FailOpen
from cache.keys import namespace_hash
from cache.redis_client import RedisClient
from gateway.errors import RateLimited

log = logging.getLogger("sluice.gateway.limits")

WINDOW_S = 60


@dataclass(frozen=True, kw_only=True)
class TenantLimits:
    """A tenant's limits; None leaves that one unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.concurrency))

    def over(self, defaults: TenantLimits) -> TenantLimits:
        """These limits, with `defaults` where these have none."""
        return TenantLimits(
            rpm=self.rpm or defaults.rpm,
            tpm=self.tpm or defaults.tpm,
            concurrency=self.concurrency or defaults.concurrency,
        )


@dataclass(frozen=True)
class Lease:
    """One upstream call's slot in its tenant's concurrency set."""

    key: str
    member: str


def _retry_after(now: float) -> int:
    """Whole seconds until the next window opens (at least 1)."""
    return max(1, math.ceil(WINDOW_S - now % WINDOW_S))


class RateLimiter:
    """Counts requests, tokens and upstream calls per tenant in Redis; fails open.

    Parameters:
        redis: the Redis every replica shares.
        prefix: the deployment's key prefix.
        timeout_s: time limit of one Redis operation; past it the limit is not applied.
        lease_s: how long a concurrency slot lives without renewal: a replica that dies
            holding slots gives them back after this long. Slots held by a live replica are
            renewed every third of it.
        clock: seconds since the epoch (shared by the replicas: windows are aligned to it).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        timeout_s: float = 0.25,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_s = lease_s
        self._clock = clock
        self.failopen = FailOpen(
            timeout_s=timeout_s,
            logger=log,
            name="rate limits",
            while_down="every request is admitted until it returns",
            on_return="rate limits apply again",
        )
        self._held: set[Lease] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RateLimiter:
        # The task is held here so it is not collected while it runs.
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for lease in list(self._held):
            await self.release(lease)

    def _key(self, tenant: str, kind: str) -> str:
        return f"{self._prefix}:rl:{{{namespace_hash(tenant)}}}:{kind}"

    async def admit(self, tenant: str, limits: TenantLimits) -> None:
        """Counts one request against the tenant's requests per minute; RateLimited past it."""
        if limits.rpm is None:
            return
        now = self._clock()
        key = self._key(tenant, f"r:{int(now // WINDOW_S)}")

        async def count() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_S)
            return int((await pipe.execute())[0])

        used = await self.failopen.run(count, 0, what="request count")
        if used > limits.rpm:
            raise RateLimited(
                f"Rate limit reached for requests per minute (RPM): limit {limits.rpm}.",
                retry_after_s=_retry_after(now),
                limit="requests",
            )

    async def check_tokens(self, tenant: str, limits: TenantLimits) -> None:
        """RateLimited if the tenant's upstream answers have used its tokens for this minute."""
        if limits.tpm is None:
            return
        now = self._clock()
        key = self._key(tenant, f"t:{int(now // WINDOW_S)}")

        async def used() -> int:
            return int(await self._redis.get(key) or 0)

        if await self.failopen.run(used, 0, what="token count") >= limits.tpm:
            raise RateLimited(
                f"Rate limit reached for tokens per minute (TPM): limit {limits.tpm}.",
                retry_after_s=_retry_after(now),
                limit="tokens",
            )

    async def charge(self, tenant: str, limits: TenantLimits, tokens: int) -> None:
        """Adds an upstream answer's tokens to the tenant's minute (after the answer)."""
        if limits.tpm is None or tokens <= 0:
            return
        key = self._key(tenant, f"t:{int(self._clock() // WINDOW_S)}")

        async def add() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incrby(key, tokens)
            pipe.expire(key, 2 * WINDOW_S)
            await pipe.execute()

        await self.failopen.run(add, None, what="token charge")

    async def acquire(self, tenant: str, limits: TenantLimits) -> Lease | None:
        """A slot for one upstream call, or RateLimited when the tenant has all of its own.

        None: no limit, or Redis unreachable (nothing to give back).
        """
        if limits.concurrency is None:
            return None
        lease = Lease(self._key(tenant, "c"), uuid.uuid4().hex)
        now = self._clock()

        async def take() -> int:
            # A new lease runs out last, so its rank is the number of live slots before it;
            # of two replicas racing for the last slot exactly one gets it.
            pipe = self._redis.pipeline(transaction=True)
            pipe.zremrangebyscore(lease.key, "-inf", now)
            pipe.zadd(lease.key, {lease.member: now + self._lease_s})
            pipe.zrank(lease.key, lease.member)
            pipe.expire(lease.key, math.ceil(2 * self._lease_s))
            return int((await pipe.execute())[2])

        rank = await self.failopen.run(take, -1, what="concurrency slot")
        if rank < 0:
            return None
        if rank >= limits.concurrency:
            await self.failopen.run(
                lambda: self._redis.zrem(lease.key, lease.member), 0, what="concurrency slot"
            )
            raise RateLimited(
                f"Rate limit reached for concurrent requests: limit {limits.concurrency}.",
                retry_after_s=1,
                limit="concurrency",
            )
        self._held.add(lease)
        return lease

    async def release(self, lease: Lease) -> None:
        """Gives a slot back (its lease would run out anyway)."""
        self._held.discard(lease)
        await self.failopen.run(
            lambda: self._redis.zrem(lease.key, lease.member), 0, what="concurrency release"
        )

    async def _renew_forever(self) -> None:
        """Keeps the leases of calls still running from running out."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            if self._held:
                await self.failopen.run(self._renew, None, what="concurrency renewal")

    async def _renew(self) -> None:
        until = self._clock() + self._lease_s
        pipe = self._redis.pipeline(transaction=False)
        for lease in list(self._held):
            # xx: a slot given back meanwhile is not taken again.
            pipe.zadd(lease.key, {lease.member: until}, xx=True)
        await pipe.execute()
