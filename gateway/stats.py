"""This gateway's own request statistics over the last minute, the last hour and since start."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["exact", "semantic", "miss", "bypass", "error"]
OUTCOMES: tuple[Outcome, ...] = ("exact", "semantic", "miss", "bypass", "error")

# Latency buckets grow by 10% from 0.05 ms to past 10 minutes: percentiles within about 5%.
_GROWTH = 1.1
_EDGES = [0.05 * _GROWTH**i for i in range(175)]


@dataclass(slots=True)
class _Cell:
    count: int = 0
    saved_tokens: int = 0
    coalesced: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(_EDGES) + 1))

    def add(self, other: _Cell) -> None:
        self.count += other.count
        self.saved_tokens += other.saved_tokens
        self.coalesced += other.coalesced
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]


_Key = tuple[str, str, Outcome]  # tenant, model, outcome


class _Window:
    """Counts in `slots` slots of `slot_s` seconds each; older slots are dropped."""

    def __init__(self, *, slot_s: float, slots: int) -> None:
        self._slot_s = slot_s
        self._slots = slots
        self._data: dict[int, dict[_Key, _Cell]] = {}

    def cell(self, key: _Key, now: float) -> _Cell:
        index = int(now // self._slot_s)
        slot = self._data.get(index)
        if slot is None:
            slot = self._data[index] = {}
            for old in [i for i in self._data if i <= index - self._slots]:
                del self._data[old]
        found = slot.get(key)
        if found is None:
            found = slot[key] = _Cell()
        return found

    def cells(self, now: float) -> Iterable[tuple[_Key, _Cell]]:
        first = int(now // self._slot_s) - self._slots + 1
        for index, slot in self._data.items():
            if index >= first:
                yield from slot.items()


def _percentile(histogram: list[int], q: float) -> float | None:
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            upper = _EDGES[min(index, len(_EDGES) - 1)]
            return round(upper / math.sqrt(_GROWTH), 3)
    return None


def _summary(cells: dict[Outcome, _Cell]) -> dict[str, Any]:
    counts = {outcome: cells[outcome].count for outcome in OUTCOMES}
    requests = sum(counts.values())
    hits = counts["exact"] + counts["semantic"]
    coalesced = cells["miss"].coalesced

    def rate(n: int) -> float:
        return round(n / requests, 4) if requests else 0.0

    def latency(*outcomes: Outcome) -> dict[str, float | None]:
        merged = _Cell()
        for outcome in outcomes:
            merged.add(cells[outcome])
        return {"p50": _percentile(merged.latency, 0.5), "p99": _percentile(merged.latency, 0.99)}

    return {
        "requests": requests,
        "exact_hits": counts["exact"],
        "semantic_hits": counts["semantic"],
        "misses": counts["miss"],
        "bypasses": counts["bypass"],
        "errors": counts["error"],
        "hit_rate": rate(hits),
        "exact_hit_rate": rate(counts["exact"]),
        "semantic_hit_rate": rate(counts["semantic"]),
        "coalesced": coalesced,
        "saved_upstream_calls": hits + coalesced,
        "saved_tokens": sum(cells[o].saved_tokens for o in OUTCOMES),
        "latency_ms": {
            "hits": latency("exact", "semantic"),
            "misses": latency("miss"),
            "bypasses": latency("bypass"),
        },
    }


class RequestStats:
    """Per-tenant and per-model counts and latency percentiles of the requests this process served.

    Args:
        clock: seconds, monotonic enough for windows (tests pass a fake one).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._started = clock()
        self._minute = _Window(slot_s=1.0, slots=60)
        self._hour = _Window(slot_s=60.0, slots=60)
        self._total = _Window(slot_s=math.inf, slots=1)

    def record(
        self,
        tenant: str,
        model: str,
        outcome: Outcome,
        *,
        latency_ms: float,
        saved_tokens: int = 0,
        coalesced: bool = False,
    ) -> None:
        """Counts one answered request."""
        now = self._clock()
        bucket = bisect.bisect_left(_EDGES, latency_ms)
        key: _Key = (tenant, model, outcome)
        for window in (self._minute, self._hour, self._total):
            cell = window.cell(key, now)
            cell.count += 1
            cell.saved_tokens += saved_tokens
            cell.coalesced += int(coalesced)
            cell.latency[bucket] += 1

    def snapshot(self) -> dict[str, Any]:
        """Overall, per-tenant and per-model summaries for each window."""
        now = self._clock()
        windows = {"last_minute": self._minute, "last_hour": self._hour, "since_start": self._total}
        out: dict[str, Any] = {"started_at": self._started, "uptime_s": round(now - self._started)}
        for name, window in windows.items():
            overall: dict[Outcome, _Cell] = {o: _Cell() for o in OUTCOMES}
            tenants: dict[str, dict[Outcome, _Cell]] = {}
            models: dict[str, dict[Outcome, _Cell]] = {}
            for (tenant, model, outcome), cell in window.cells(now):
                overall[outcome].add(cell)
                tenants.setdefault(tenant, {o: _Cell() for o in OUTCOMES})[outcome].add(cell)
                models.setdefault(model, {o: _Cell() for o in OUTCOMES})[outcome].add(cell)
            out[name] = {
                "overall": _summary(overall),
                "per_tenant": {t: _summary(c) for t, c in sorted(tenants.items())},
                "per_model": {m: _summary(c) for m, c in sorted(models.items())},
            }
        return out
