"""Event counters and latency histograms in Redis, shared by every gateway replica.

The gateway counts each request's outcome here (gateway/stats.py owns that vocabulary); the
cache counts one event of its own, `wrong` (a semantic hit an operator reported wrong, when it
was reported). This module only knows events, namespaces and models.

Layout (P = key prefix): `P:stats:all` (since counting began), `P:stats:m:<minute>` (one per
minute, kept a little over 2 h) and `P:stats:s:<5 s slot>` (kept a little over 3 min). Each is
a hash with the fields
    c|namespace|model|event          -> count
    t|namespace|model|event          -> a summed amount (the gateway: tokens saved)
    l|namespace|model|event|bin      -> latencies in a log-scale bin 10 % wide
and `P:stats:all` also holds `since` (when counting began). The last minute is the last twelve
5-second slots; the last hour is the current minute and the 59 before it.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cache.redis_client import RedisClient

SEP = "\x1f"
BIN_BASE_MS = 0.01
BIN_GROWTH = 1.1
MAX_BIN = 250
SLOT_S = 5
TIMELINE_SLOTS = 36  # three minutes of 5-second slots
HOUR_MINUTES = 60
MINUTE_TTL_S = 2 * 3600 + 120
SLOT_TTL_S = TIMELINE_SLOTS * SLOT_S + 30

Cell = tuple[str, str, str]  # namespace, model, event
# Increments waiting to be written: (hash key, field) -> amount.
Pending = dict[tuple[str, str], int]


def latency_bin(ms: float) -> int:
    """Log-scale histogram bin of a latency."""
    if ms <= BIN_BASE_MS:
        return 0
    return min(MAX_BIN, int(math.log(ms / BIN_BASE_MS) / math.log(BIN_GROWTH)) + 1)


def percentile(bins: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of a histogram, as its bin's geometric middle (within about 5 %)."""
    total = sum(bins.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for b in sorted(bins):
        seen += bins[b]
        if seen >= rank:
            break
    upper = BIN_BASE_MS * BIN_GROWTH**b
    return round(upper if b == 0 else upper / math.sqrt(BIN_GROWTH), 3)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Tally:
    """Count, summed amount and latency histogram of one (namespace, model, event)."""

    count: int = 0
    amount: int = 0
    bins: Counter[int] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.count += other.count
        self.amount += other.amount
        self.bins.update(other.bins)


@dataclass(slots=True)
class Window:
    """Everything counted in one stretch of time, by (namespace, model, event)."""

    cells: dict[Cell, Tally] = field(default_factory=lambda: defaultdict(Tally))

    def add_hash(self, raw: Mapping[Any, Any]) -> None:
        for name, value in raw.items():
            parts = _s(name).split(SEP)
            kind = parts[0]
            if kind in ("c", "t") and len(parts) == 4:
                tally = self.cells[(parts[1], parts[2], parts[3])]
                if kind == "c":
                    tally.count += int(value)
                else:
                    tally.amount += int(value)
            elif kind == "l" and len(parts) == 5 and parts[4].isdigit():
                self.cells[(parts[1], parts[2], parts[3])].bins[int(parts[4])] += int(value)

    def add(self, other: Window) -> None:
        for cell, tally in other.cells.items():
            self.cells[cell].add(tally)

    def count(self, event: str, *, namespace: str | None = None, model: str | None = None) -> int:
        """How many `event`s, all together or for one namespace or model."""
        return sum(
            t.count
            for (ns, m, e), t in self.cells.items()
            if e == event and namespace in (None, ns) and model in (None, m)
        )


@dataclass(slots=True)
class Windows:
    """The windows read back: since counting began, the last hour and minute, and the
    timelines (oldest first) of 5-second slots and of minutes."""

    since: float | None
    since_start: Window
    last_hour: Window
    last_minute: Window
    slots: list[tuple[float, Window]]
    minutes: list[tuple[float, Window]]


class StatsStore:
    """Writes pending increments in one pipelined round trip; reads every window in another.

    Parameters:
        redis: the cache's Redis client.
        prefix: the deployment's key prefix.
    """

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _keys(self, now: float) -> tuple[str, str, str]:
        return (
            f"{self.prefix}:stats:all",
            f"{self.prefix}:stats:m:{int(now // 60)}",
            f"{self.prefix}:stats:s:{int(now // SLOT_S)}",
        )

    def add(
        self,
        pending: Pending,
        namespace: str,
        model: str,
        event: str,
        *,
        at: float,
        latency_ms: float | None = None,
        amount: int = 0,
    ) -> None:
        """Adds one event to `pending` (in the keys of the time `at`), to be written later."""
        cell = (namespace, model, event)
        fields = [SEP.join(("c", *cell))]
        if latency_ms is not None:
            fields.append(SEP.join(("l", *cell, str(latency_bin(latency_ms)))))
        for key in self._keys(at):
            for name in fields:
                pending[(key, name)] = pending.get((key, name), 0) + 1
            if amount:
                name = SEP.join(("t", *cell))
                pending[(key, name)] = pending.get((key, name), 0) + amount

    def drop_stale(self, pending: Pending, now: float) -> None:
        """Forgets increments of slots and minutes that would have expired by now."""
        slot_now, minute_now = int(now // SLOT_S), int(now // 60)
        for key, name in list(pending):
            head, _, index = key.rpartition(":")
            kind = head.rpartition(":")[2]
            if not index.isdigit():
                continue
            if (kind == "s" and (slot_now - int(index)) * SLOT_S > SLOT_TTL_S) or (
                kind == "m" and (minute_now - int(index)) * 60 > MINUTE_TTL_S
            ):
                del pending[(key, name)]

    async def write(self, pending: Pending) -> None:
        """Writes the increments (and the keys' lifetimes) in one round trip."""
        if not pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        touched: set[str] = set()
        for (key, name), amount in pending.items():
            pipe.hincrby(key, name, amount)
            touched.add(key)
        for key in touched:
            if key.endswith(":all"):
                pipe.hsetnx(key, "since", repr(time.time()))
            else:
                pipe.expire(key, SLOT_TTL_S if ":stats:s:" in key else MINUTE_TTL_S)
        await pipe.execute()

    async def record(
        self, namespace: str, model: str, event: str, latency_ms: float | None = None
    ) -> None:
        """Counts one event at once."""
        pending: Pending = {}
        self.add(pending, namespace, model, event, at=time.time(), latency_ms=latency_ms)
        await self.write(pending)

    def _read_keys(self, now: float) -> tuple[list[str], list[float], list[float]]:
        minute_now, slot_now = int(now // 60), int(now // SLOT_S)
        minutes = [float(minute_now - i) * 60 for i in reversed(range(HOUR_MINUTES))]
        slots = [float(slot_now - i) * SLOT_S for i in reversed(range(TIMELINE_SLOTS))]
        keys = [f"{self.prefix}:stats:all"]
        keys += [f"{self.prefix}:stats:m:{int(t // 60)}" for t in minutes]
        keys += [f"{self.prefix}:stats:s:{int(t // SLOT_S)}" for t in slots]
        return keys, minutes, slots

    async def read(self, *, extra: Pending | None = None, now: float | None = None) -> Windows:
        """Every window, with `extra` (increments not written yet) added in."""
        now = time.time() if now is None else now
        keys, _, _ = self._read_keys(now)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        raws = await pipe.execute()
        return self.windows(dict(zip(keys, raws, strict=True)), extra=extra, now=now)

    def windows(
        self,
        hashes: Mapping[str, Mapping[Any, Any]],
        *,
        extra: Pending | None = None,
        now: float | None = None,
    ) -> Windows:
        """Windows from hashes already read (or from `extra` alone, when Redis is away)."""
        now = time.time() if now is None else now
        keys, minute_starts, slot_starts = self._read_keys(now)
        merged: dict[str, dict[Any, Any]] = {key: dict(hashes.get(key) or {}) for key in keys}
        for (key, name), amount in (extra or {}).items():
            if key in merged:
                held = merged[key]
                held[name] = int(held.get(name, held.get(name.encode(), 0))) + amount
                held.pop(name.encode(), None)
        total = merged[keys[0]]
        since_raw = total.pop("since", None) or total.pop(b"since", None)
        windows = [Window() for _ in keys]
        for window, key in zip(windows, keys, strict=True):
            window.add_hash(merged[key])
        minute_windows = windows[1 : 1 + HOUR_MINUTES]
        slot_windows = windows[1 + HOUR_MINUTES :]
        return Windows(
            since=float(_s(since_raw)) if since_raw is not None else None,
            since_start=windows[0],
            last_hour=_sum(minute_windows),
            last_minute=_sum(slot_windows[-(60 // SLOT_S) :]),
            slots=list(zip(slot_starts, slot_windows, strict=True)),
            minutes=list(zip(minute_starts, minute_windows, strict=True)),
        )

    async def clear(self) -> None:
        """Removes every stats key under the prefix (tests and resets)."""
        async for key in self.redis.scan_iter(match=f"{self.prefix}:stats:*", count=500):
            await self.redis.delete(key)


def _sum(windows: Iterable[Window]) -> Window:
    out = Window()
    for window in windows:
        out.add(window)
    return out
