"""Runs Redis operations so that trouble becomes a miss or a dropped write, never an exception."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError

T = TypeVar("T")

# What an outage looks like from redis-py: its own errors, socket errors, and our timeout.
# RedisClusterException is not a RedisError: the Cluster client raises it when no node answers
# ("Redis Cluster cannot be connected") or a slot has no node (SlotNotCoveredError).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)


class FailOpen:
    """Guards every Redis call with a timeout; logs one warning per outage and recovers alone.

    While Redis is known to be down, calls are skipped (the default is returned at once)
    except for one probe per `probe_interval_s`, so a dead Redis costs requests nothing.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 0.05,
        probe_interval_s: float = 0.5,
        logger: logging.Logger | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.logger = logger or logging.getLogger("sluice.cache")
        self._down_since: float | None = None
        self._next_probe = 0.0
        self.outages = 0

    @property
    def healthy(self) -> bool:
        """False from the first failed operation until one succeeds again."""
        return self._down_since is None

    async def run(
        self,
        op: Callable[[], Awaitable[T]],
        default: T,
        *,
        what: str,
        timeout_s: float | None = None,
    ) -> T:
        """`await op()` under the timeout; on an outage error returns `default`."""
        now = time.monotonic()
        if self._down_since is not None and now < self._next_probe:
            return default
        try:
            # asyncio.timeout runs op in this task; wait_for (3.11) wraps it in a new one.
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await op()
        except OUTAGE_ERRORS as exc:
            self._failed(what, exc)
            return default
        if self._down_since is not None:
            self.logger.warning(
                "cache: Redis is back after %.1f s; caching resumed",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        """Logs the first failure of an outage; later ones only push the next probe back."""
        now = time.monotonic()
        self._next_probe = now + self.probe_interval_s
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            self.logger.warning(
                "cache: Redis unavailable during %s (%s: %s); serving misses and dropping "
                "stores until it returns",
                what,
                type(exc).__name__,
                exc,
            )
