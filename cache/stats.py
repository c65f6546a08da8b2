"""Outcome counters and latency histograms in Redis, shared by every gateway replica.

Layout (P = key prefix): `P:stats:all` (since counting began), `P:stats:m:<minute>` (one per
minute, kept 2 h) and `P:stats:s:<5 s slot>` (kept 3 min). Each is a hash whose fields are
`c|namespace|model|outcome` -> count and `l|namespace|model|bin` -> count, where latency bins
are 10 % wide on a log scale, so p50/p99 are read back within 10 %. The outcome `wrong` is not
a request: it counts semantic hits an operator reported wrong, when they were reported.
The last minute is the last twelve 5-second slots; the last hour is the current minute and
the 59 before it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from cache.redis_client import RedisClient

OUTCOMES = ("exact", "semantic", "miss", "bypass", "store", "wrong")
SEP = "\x1f"
BIN_BASE_MS = 0.01
BIN_GROWTH = 1.1
MAX_BIN = 250
SLOT_S = 5
MINUTE_TTL_S = 2 * 3600 + 120
SLOT_TTL_S = 180


def latency_bin(ms: float) -> int:
    """Log-scale histogram bin of a latency."""
    if ms <= BIN_BASE_MS:
        return 0
    return min(MAX_BIN, int(math.log(ms / BIN_BASE_MS) / math.log(BIN_GROWTH)) + 1)


def bin_upper_ms(b: int) -> float:
    """The upper edge of a bin: percentiles are reported conservatively."""
    return BIN_BASE_MS * BIN_GROWTH**b


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Tally:
    """Counts and a latency histogram for one slice (overall, a namespace or a model)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.bins: dict[int, int] = defaultdict(int)

    def report(self) -> dict[str, Any]:
        requests = sum(self.counts[o] for o in ("exact", "semantic", "miss", "bypass"))
        hits = self.counts["exact"] + self.counts["semantic"]
        return {
            "exact": self.counts["exact"],
            "semantic": self.counts["semantic"],
            "miss": self.counts["miss"],
            "bypass": self.counts["bypass"],
            "stores": self.counts["store"],
            "requests": requests,
            "hit_rate": hits / requests if requests else None,
            "reported_wrong": self.counts["wrong"],
            # A floor on the false-hit rate: only what operators found and reported.
            "false_hit_rate": (
                self.counts["wrong"] / self.counts["semantic"] if self.counts["semantic"] else None
            ),
            "latency_ms": {
                "p50": self._percentile(0.50),
                "p99": self._percentile(0.99),
                "count": sum(self.bins.values()),
            },
        }

    def _percentile(self, q: float) -> float | None:
        total = sum(self.bins.values())
        if not total:
            return None
        rank, seen = q * total, 0
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen >= rank:
                return round(bin_upper_ms(b), 3)
        return round(bin_upper_ms(max(self.bins)), 3)


class _View:
    """One time window split overall, per namespace and per model."""

    def __init__(self) -> None:
        self.overall = _Tally()
        self.namespaces: dict[str, _Tally] = defaultdict(_Tally)
        self.models: dict[str, _Tally] = defaultdict(_Tally)

    def add(self, raw: dict[Any, Any]) -> None:
        for field, value in raw.items():
            parts = _s(field).split(SEP)
            if len(parts) != 4:
                continue
            kind, ns, model, what = parts
            n = int(value)
            for tally in (self.overall, self.namespaces[ns], self.models[model]):
                if kind == "c" and what in tally.counts:
                    tally.counts[what] += n
                elif kind == "l" and what.isdigit():
                    tally.bins[int(what)] += n

    def report(self) -> dict[str, Any]:
        return {
            "overall": self.overall.report(),
            "namespaces": {k: v.report() for k, v in sorted(self.namespaces.items())},
            "models": {k: v.report() for k, v in sorted(self.models.items())},
        }


class StatsStore:
    """Writes one outcome in one pipelined round trip; reads all windows in another."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _keys(self, now: float) -> tuple[str, str, str]:
        return (
            f"{self.prefix}:stats:all",
            f"{self.prefix}:stats:m:{int(now // 60)}",
            f"{self.prefix}:stats:s:{int(now // SLOT_S)}",
        )

    async def record(
        self, namespace: str, model: str, outcome: str, latency_ms: float | None
    ) -> None:
        total, minute, slot = self._keys(time.time())
        count_field = SEP.join(("c", namespace, model, outcome))
        pipe = self.redis.pipeline(transaction=False)
        for key in (total, minute, slot):
            pipe.hincrby(key, count_field, 1)
            if latency_ms is not None:
                pipe.hincrby(
                    key, SEP.join(("l", namespace, model, str(latency_bin(latency_ms)))), 1
                )
        pipe.expire(minute, MINUTE_TTL_S)
        pipe.expire(slot, SLOT_TTL_S)
        await pipe.execute()

    async def read(self) -> dict[str, Any]:
        now = time.time()
        total, _, _ = self._keys(now)
        minute_now, slot_now = int(now // 60), int(now // SLOT_S)
        minutes = [f"{self.prefix}:stats:m:{minute_now - i}" for i in range(60)]
        slots = [f"{self.prefix}:stats:s:{slot_now - i}" for i in range(60 // SLOT_S)]
        pipe = self.redis.pipeline(transaction=False)
        for key in (total, *minutes, *slots):
            pipe.hgetall(key)
        raws = await pipe.execute()
        views = {"since_start": _View(), "last_hour": _View(), "last_minute": _View()}
        views["since_start"].add(raws[0])
        for raw in raws[1 : 1 + len(minutes)]:
            views["last_hour"].add(raw)
        for raw in raws[1 + len(minutes) :]:
            views["last_minute"].add(raw)
        return {name: view.report() for name, view in views.items()}

    async def clear(self) -> None:
        """Removes every stats key under the prefix (tests and resets)."""
        async for key in self.redis.scan_iter(match=f"{self.prefix}:stats:*", count=500):
            await self.redis.delete(key)
