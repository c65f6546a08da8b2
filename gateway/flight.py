"""Single-flight: concurrent identical misses share one upstream call."""

from __future__ import annotations

import asyncio
from typing import Any

Answer = dict[str, Any]


class SingleFlight:
    """In-flight upstream calls by exact request key, each a future of the full answer.

    A finished flight may stay listed (`keep`) until its answer is stored in the cache, so a
    repeat that arrives in between is answered from memory instead of calling upstream again.
    A failed flight resolves to None and its followers go upstream on their own.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[Answer | None]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> asyncio.Future[Answer | None] | None:
        """The flight for this key, running or finished, if any."""
        return self._flights.get(key)

    def lead(self, key: str) -> asyncio.Future[Answer | None]:
        """Starts a flight for this key; the caller must `finish` it."""
        future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    def finish(
        self, key: str, future: asyncio.Future[Answer | None], answer: Answer | None, *, keep: bool
    ) -> None:
        """Hands the answer (None on failure) to the followers; unlists it unless `keep`."""
        if not future.done():
            future.set_result(answer)
        if not keep or answer is None:
            self.release(key, future)

    def release(self, key: str, future: asyncio.Future[Answer | None]) -> None:
        """Unlists a flight (once its answer is in the cache, or it failed)."""
        if self._flights.get(key) is future:
            del self._flights[key]
