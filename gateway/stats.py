"""Request statistics: one outcome per request, counted once, summed over every replica.

`RequestStats.record` is the only place a request is counted. Each record goes two ways:
into this process's Prometheus instruments (`/metrics`, which Prometheus sums over replicas)
and, batched every `flush_interval_s`, into the shared counters in Redis (cache/stats.py),
which `/admin/stats`, `sluice stats` and the `/admin` page read for all replicas at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

from cache.stats import SLOT_S, Pending, StatsStore, Tally, Window, Windows, percentile

log = logging.getLogger("sluice.gateway")

Outcome = Literal["exact", "semantic", "miss", "bypass", "coalesced", "error"]
OUTCOMES: tuple[Outcome, ...] = ("exact", "semantic", "miss", "bypass", "coalesced", "error")
# Not a request: a semantic hit an operator reported wrong (counted by the cache when reported).
WRONG = "wrong"

_SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _rate(n: int, of: int) -> float:
    return round(n / of, 4) if of else 0.0


def summary(tallies: dict[str, Tally]) -> dict[str, Any]:
    """Counts, rates, savings and latency percentiles of one slice, from its tallies by event."""
    counts = {o: tallies[o].count if o in tallies else 0 for o in (*OUTCOMES, WRONG)}
    requests = sum(counts[o] for o in OUTCOMES)
    hits = counts["exact"] + counts["semantic"]

    def latency(*outcomes: str) -> dict[str, float | None]:
        bins: Counter[int] = Counter()
        for o in outcomes:
            if o in tallies:
                bins.update(tallies[o].bins)
        return {"p50": percentile(bins, 0.5), "p99": percentile(bins, 0.99)}

    return {
        "requests": requests,
        "exact_hits": counts["exact"],
        "semantic_hits": counts["semantic"],
        "misses": counts["miss"],
        "coalesced": counts["coalesced"],
        "bypasses": counts["bypass"],
        "errors": counts["error"],
        "hit_rate": _rate(hits, requests),
        "exact_hit_rate": _rate(counts["exact"], requests),
        "semantic_hit_rate": _rate(counts["semantic"], requests),
        "saved_upstream_calls": hits + counts["coalesced"],
        "saved_tokens": sum(t.amount for t in tallies.values()),
        "reported_wrong": counts[WRONG],
        # A floor on the false-hit rate: only what operators found and reported.
        "false_hit_rate": (
            round(counts[WRONG] / counts["semantic"], 4) if counts["semantic"] else None
        ),
        "latency_ms": {
            "hits": latency("exact", "semantic"),
            "misses": latency("miss", "coalesced"),
            "bypasses": latency("bypass"),
        },
    }


_Slices = tuple[dict[str, Tally], dict[str, dict[str, Tally]], dict[str, dict[str, Tally]]]


def _slices(window: Window) -> _Slices:
    overall: dict[str, Tally] = {}
    tenants: dict[str, dict[str, Tally]] = {}
    models: dict[str, dict[str, Tally]] = {}
    for (tenant, model, event), tally in window.cells.items():
        for slice_ in (overall, tenants.setdefault(tenant, {}), models.setdefault(model, {})):
            slice_.setdefault(event, Tally()).add(tally)
    return overall, tenants, models


def report(window: Window) -> dict[str, Any]:
    """One window overall, per tenant and per model."""
    overall, tenants, models = _slices(window)
    return {
        "overall": summary(overall),
        "per_tenant": {t: summary(c) for t, c in sorted(tenants.items())},
        "per_model": {m: summary(c) for m, c in sorted(models.items())},
    }


def _counts(tallies: dict[str, Tally]) -> dict[str, int]:
    return {o: tallies[o].count if o in tallies else 0 for o in OUTCOMES}


def timeline(points: Iterable[tuple[float, Window]], step_s: int) -> dict[str, Any]:
    """Outcome counts per time step, overall, per tenant and per model, oldest first."""
    out = []
    for start, window in points:
        overall, tenants, models = _slices(window)
        out.append(
            {
                "t": start,
                "overall": _counts(overall),
                "per_tenant": {t: _counts(c) for t, c in sorted(tenants.items())},
                "per_model": {m: _counts(c) for m, c in sorted(models.items())},
            }
        )
    return {"step_s": step_s, "points": out}


class RequestStats:
    """Counts answered requests; an async context manager whose task writes them to Redis.

    Parameters:
        store: the shared counters (cache/stats.py) on the cache's Redis.
        registry: where this process's Prometheus instruments are registered.
        flush_interval_s: how often counts pending in this process are written to Redis.
        timeout_s: time limit of a read (/admin/stats); past it, this process's counts only.
        write_timeout_s: time limit of a write; past it, the counts stay pending and are written
            again. Generous, as the write is off the request path: a write that timed out may
            still have landed, and would then count twice.
        clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(
        self,
        store: StatsStore,
        *,
        registry: CollectorRegistry,
        flush_interval_s: float = 0.5,
        timeout_s: float = 2.0,
        write_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        self._clock = clock
        self._pending: Pending = {}
        self._writing: Pending = {}  # the batch a write is sending now
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._requests = PromCounter(
            "sluice_gateway_requests",
            "Answered requests by tenant, model and outcome.",
            ["tenant", "model", "outcome"],
            registry=registry,
        )
        self._seconds = PromHistogram(
            "sluice_gateway_request_seconds",
            "Time from request to the end of the answer, by outcome.",
            ["outcome"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self._saved_tokens = PromCounter(
            "sluice_gateway_saved_tokens",
            "Tokens (prompt + completion) of answers served from the cache.",
            ["tenant", "model"],
            registry=registry,
        )

    async def __aenter__(self) -> RequestStats:
        self._task = asyncio.create_task(self._flush_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

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
        """Counts one answered request (a miss that shared another's upstream call is
        `coalesced`); never waits."""
        if coalesced and outcome == "miss":
            outcome = "coalesced"
        self._requests.labels(tenant, model, outcome).inc()
        self._seconds.labels(outcome).observe(latency_ms / 1000.0)
        if saved_tokens:
            self._saved_tokens.labels(tenant, model).inc(saved_tokens)
        self.store.add(
            self._pending,
            tenant,
            model,
            outcome,
            at=self._clock(),
            latency_ms=latency_ms,
            amount=saved_tokens,
        )

    async def flush(self) -> bool:
        """Writes the pending counts to Redis; False (and they stay pending) if it failed."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            self._writing = pending
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await self.store.write(pending)
            except Exception as exc:
                _merge(self._pending, pending)
                self.store.drop_stale(self._pending, self._clock())
                if not self._failing:
                    self._failing = True
                    log.warning("statistics not written to Redis (%s); kept", type(exc).__name__)
                return False
            finally:
                self._writing = {}
        if self._failing:
            self._failing = False
            log.warning("statistics written to Redis again")
        return True

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def read(self) -> tuple[Windows, bool]:
        """Every window for all replicas, with this process's unwritten counts; the flag says
        whether Redis answered (if not, the windows hold this process's unwritten counts only).
        Waits for a write in progress, so that its counts are read once."""
        try:
            async with asyncio.timeout(self.timeout_s), self._lock:
                return await self.store.read(extra=self._pending, now=self._clock()), True
        except Exception:
            unwritten = dict(self._pending)
            _merge(unwritten, self._writing)
            return self.store.windows({}, extra=unwritten, now=self._clock()), False

    async def snapshot(self) -> dict[str, Any]:
        """What /admin/stats shows: windows overall, per tenant and model, and timelines."""
        windows, available = await self.read()
        return {
            "redis_available": available,
            "counting_since": windows.since,
            "last_minute": report(windows.last_minute),
            "last_hour": report(windows.last_hour),
            "since_start": report(windows.since_start),
            "timeline": {
                "seconds": timeline(windows.slots, SLOT_S),
                "minutes": timeline(windows.minutes, 60),
            },
        }


def _merge(into: Pending, more: Pending) -> None:
    for key, amount in more.items():
        into[key] = into.get(key, 0) + amount
