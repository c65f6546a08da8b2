"""Writes request outcomes to the cache's shared Redis counters off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from cache.response_cache import Outcome

log = logging.getLogger("sluice.gateway")

Writer = Callable[[str, str, Outcome, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Record:
    tenant: str
    model: str
    outcome: Outcome
    latency_ms: float


class OutcomeRecorder:
    """A bounded queue drained by a few writer tasks.

    One task per request would let Redis writes pile up without limit under load (and exhaust
    the connection pool); here at most `writers` are in flight, and past `max_pending` queued
    records new ones are dropped and counted, so the request path never waits for statistics.
    """

    def __init__(self, write: Writer, *, writers: int = 4, max_pending: int = 50_000) -> None:
        self._write = write
        self._writers = writers
        self._queue: asyncio.Queue[_Record] = asyncio.Queue(max_pending)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    async def __aenter__(self) -> OutcomeRecorder:
        self._tasks = [asyncio.create_task(self._drain()) for _ in range(self._writers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def submit(self, tenant: str, model: str, outcome: Outcome, latency_ms: float) -> None:
        """Queues one outcome; never blocks."""
        try:
            self._queue.put_nowait(_Record(tenant, model, outcome, latency_ms))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("shared statistics are behind; %d records dropped", self.dropped)

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._write(item.tenant, item.model, item.outcome, item.latency_ms)
            except Exception:  # the writer fails open; this is only a last guard
                log.debug("recording an outcome failed", exc_info=True)
            finally:
                self._queue.task_done()
