"""Single-flight: concurrent identical misses share one upstream call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeAlias

from cache.response_cache import CacheHit

Answer = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Shared:
    """What a flight hands its followers: the answer, and the cache hit that gave it, if any."""

    answer: Answer
    hit: CacheHit | None = None


Flight: TypeAlias = "asyncio.Future[Shared | None]"


class SingleFlight:
    """In-flight upstream calls by exact request key, each a future of the full answer.

    A finished flight may stay listed (`keep`) until its answer is stored in the cache, so a
    repeat that arrives in between is answered from memory instead of calling upstream again.
    A failed flight resolves to None and its followers go upstream on their own.
    """

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        """The flight for this key, running or finished, if any."""
        return self._flights.get(key)

    def lead(self, key: str) -> Flight:
        """Starts a flight for this key; the caller must `finish` it."""
        future: Flight = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    def finish(self, key: str, future: Flight, shared: Shared | None, *, keep: bool) -> None:
        """Hands the answer (None on failure) to the followers; unlists it unless `keep`."""
        if not future.done():
            future.set_result(shared)
        if not keep or shared is None:
            self.release(key, future)

    def release(self, key: str, future: Flight) -> None:
        """Unlists a flight (once its answer is in the cache, or it failed)."""
        if self._flights.get(key) is future:
            del self._flights[key]
