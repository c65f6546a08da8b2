"""Runs Redis operations so that trouble becomes a miss or a dropped write, never an exception."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

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

    A refused or broken connection is an outage at once. A timeout is only that call's miss
    (a fork for a snapshot, a slow command) until Redis has answered nothing for
    `outage_after_s`: then it is an outage too. While Redis is known to be down, calls are
    skipped (the default is returned at once) except for one probe per `probe_interval_s`,
    so a dead Redis costs requests nothing.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 0.05,
        probe_interval_s: float = 0.5,
        outage_after_s: float | None = None,
        logger: logging.Logger | None = None,
        name: str = "cache",
        while_down: str = "serving misses and dropping stores until it returns",
        on_return: str = "caching resumed",
    ) -> None:
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        # Three timeouts' worth of silence by default: one slow answer is not an outage.
        self.outage_after_s = 3 * timeout_s if outage_after_s is None else outage_after_s
        self.logger = logger or logging.getLogger("sluice.cache")
        # Other users of Redis (the rate limiter) say in the same one line what an outage means.
        self.name, self.while_down, self.on_return = name, while_down, on_return
        self._down_since: float | None = None
        self._silent_since: float | None = None
        self._next_probe = 0.0
        self.outages = 0
        self.timeouts = 0

    @property
    def healthy(self) -> bool:
        """False from the start of an outage until an operation succeeds again."""
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
        started = time.monotonic()
        if self._down_since is not None and started < self._next_probe:
            return default
        try:
            # asyncio.timeout runs op in this task; wait_for (3.11) wraps it in a new one.
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await op()
        except (TimeoutError, RedisTimeout) as exc:
            self._timed_out(what, exc, started)
            return default
        except OUTAGE_ERRORS as exc:
            self._failed(what, exc)
            return default
        self._silent_since = None
        if self._down_since is not None:
            self.logger.warning(
                "%s: Redis is back after %.1f s; %s",
                self.name,
                time.monotonic() - self._down_since,
                self.on_return,
            )
            self._down_since = None
        return result

    def _timed_out(self, what: str, exc: BaseException, started: float) -> None:
        """A miss for this call; an outage once Redis has been silent for outage_after_s."""
        self.timeouts += 1
        if self._silent_since is None or started < self._silent_since:
            self._silent_since = started
        silent = time.monotonic() - self._silent_since
        if self._down_since is not None or silent >= self.outage_after_s:
            self._failed(what, exc)
        else:
            self.logger.debug("%s: %s timed out after %.3f s", self.name, what, silent)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Logs the first failure of an outage; later ones only push the next probe back."""
        now = time.monotonic()
        self._next_probe = now + self.probe_interval_s
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            self.logger.warning(
                "%s: Redis unavailable during %s (%s: %s); %s",
                self.name,
                what,
                type(exc).__name__,
                exc,
                self.while_down,
            )
