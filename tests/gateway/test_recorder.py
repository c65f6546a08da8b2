"""Outcome records reach the shared counters with bounded concurrency, and never block."""

from __future__ import annotations

import asyncio

from gateway.recorder import OutcomeRecorder


async def test_few_writes_in_flight_and_all_written_by_exit() -> None:
    written: list[str] = []
    in_flight = peak = 0

    async def write(tenant: str, model: str, outcome: str, latency_ms: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        written.append(tenant)
        in_flight -= 1

    async with OutcomeRecorder(write, writers=3) as recorder:  # type: ignore[arg-type]
        for i in range(200):
            recorder.submit(f"t{i}", "m", "exact", 1.0)
    assert len(written) == 200 and peak == 3 and recorder.dropped == 0


async def test_past_the_bound_records_are_dropped_not_awaited() -> None:
    gate = asyncio.Event()

    async def write(tenant: str, model: str, outcome: str, latency_ms: float) -> None:
        await gate.wait()

    async with OutcomeRecorder(write, writers=1, max_pending=10) as recorder:  # type: ignore[arg-type]
        await asyncio.sleep(0)
        for _ in range(30):
            recorder.submit("t", "m", "miss", 1.0)  # returns at once even though nothing drains
        assert 19 <= recorder.dropped <= 20
        gate.set()


async def test_a_failing_writer_does_not_stop_the_recorder() -> None:
    calls = 0

    async def write(tenant: str, model: str, outcome: str, latency_ms: float) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("redis down")

    async with OutcomeRecorder(write, writers=1) as recorder:  # type: ignore[arg-type]
        for _ in range(5):
            recorder.submit("t", "m", "miss", 1.0)
    assert calls == 5
