"""Keeps each process's vector index in step with Redis and with the other replicas.

At start the index is rebuilt from the entries in Redis; after that every replica appends
its adds and removals to one Redis stream (`P:sync`) and polls it, so an entry stored by one
gateway is searchable in every other within `interval_s` (0.2 s by default). After an outage
the index is rebuilt, since events may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from cache.entries import EntryStore, IndexRow
from cache.failopen import FailOpen
from cache.redis_client import RedisClient
from cache.vector_index import VectorIndex

REBUILD_TIMEOUT_S = 30.0


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class ReplicaSync:
    """Rebuilds the local index at start and follows the sync stream until stopped."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        store: EntryStore,
        index: VectorIndex,
        failopen: FailOpen,
        origin: str,
        interval_s: float = 0.2,
        stream_maxlen: int = 100_000,
        logger: logging.Logger | None = None,
    ) -> None:
        self.redis = redis
        self.stream = f"{prefix}:sync"
        self.store = store
        self.index = index
        self.failopen = failopen
        self.origin = origin
        self.interval_s = interval_s
        self.stream_maxlen = stream_maxlen
        self.logger = logger or logging.getLogger("sluice.cache")
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._stale = True
        self.applied = 0

    async def start(self) -> None:
        """Rebuilds the index (if Redis answers) and starts following the stream."""
        await self.rebuild()
        self._task = asyncio.create_task(self._follow(), name="cache-replica-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def rebuild(self) -> bool:
        """Loads every live entry's vector from Redis into a cleared index."""

        async def load() -> tuple[str, list[IndexRow]]:
            last = await self.redis.xrevrange(self.stream, count=1)
            last_id = _s(last[0][0]) if last else "0-0"
            rows: list[IndexRow] = []
            for nsh in await self.store.namespaces():
                rows.extend(await self.store.index_rows(nsh))
            return last_id, rows

        loaded = await self.failopen.run(
            load, None, what="index rebuild", timeout_s=REBUILD_TIMEOUT_S
        )
        if loaded is None:
            return False
        # Events after `last_id` are replayed on top, so nothing is lost between the two reads.
        self._last_id, rows = loaded
        self.index.clear()
        for row in rows:
            self.index.add(row.entry_id, row.scope, row.vector, row.expires_at)
        self._stale = False
        self.logger.info("cache: vector index rebuilt from Redis with %d entries", len(rows))
        return True

    async def publish_add(self, row: IndexRow) -> None:
        fields: dict[Any, Any] = {
            "op": "add",
            "origin": self.origin,
            "id": row.entry_id,
            "scope": row.scope,
            "exp": repr(row.expires_at),
            "vec": np.asarray(row.vector, dtype=np.float32).tobytes(),
        }
        await self.failopen.run(lambda: self._xadd(fields), None, what="sync publish")

    async def publish_remove(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        fields: dict[Any, Any] = {"op": "del", "origin": self.origin, "id": ",".join(entry_ids)}
        await self.failopen.run(lambda: self._xadd(fields), None, what="sync publish")

    async def _xadd(self, fields: dict[Any, Any]) -> None:
        await self.redis.xadd(self.stream, fields, maxlen=self.stream_maxlen, approximate=True)

    async def poll_once(self) -> bool:
        """Applies the events since the last one seen; False when Redis did not answer."""

        async def read() -> list[Any]:
            return list(await self.redis.xread({self.stream: self._last_id}, count=1000))

        result = await self.failopen.run(read, None, what="sync poll")
        if result is None:
            # A slow poll loses nothing: the next one reads on from the same id. After an
            # outage Redis may have lost the stream (a restart), so the index is rebuilt.
            if not self.failopen.healthy:
                self._stale = True
            return False
        if self._stale:
            return await self.rebuild()
        for _stream, events in result:
            for event_id, fields in events:
                self._last_id = _s(event_id)  # first: a bad event is skipped, not retried
                self._apply({_s(k): v for k, v in fields.items()})
        return True

    def _apply(self, fields: dict[str, Any]) -> None:
        if _s(fields.get("origin", b"")) == self.origin:
            return
        op = _s(fields.get("op", b""))
        if op == "add":
            self.index.add(
                _s(fields["id"]),
                _s(fields["scope"]),
                np.frombuffer(fields["vec"], dtype=np.float32),
                float(fields["exp"]),
            )
        elif op == "del":
            for entry_id in _s(fields["id"]).split(","):
                self.index.remove(entry_id)
        self.applied += 1

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except Exception:  # a bad event must not stop replication
                self.logger.exception("cache: replica sync failed to apply an event")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11's wait_for drops a cancel that lands as its operation ends;
                # without this, stop() would wait for this loop forever.
                raise asyncio.CancelledError
