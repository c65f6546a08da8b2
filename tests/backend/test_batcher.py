"""The batcher on its own: batch formation, bounds, deadlines, cancellation, failure, drain.

With a thread engine (FakeEngine) and an async engine whose rows are tasks (FakeAsyncEngine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from backend.batcher import Batcher, BatchingMode, Completion, Generation
from backend.engines.base import SamplingParams
from backend.errors import DeadlineExceeded, EngineFailed, QueueFull, ShuttingDown
from backend.metrics import BackendMetrics
from tests.backend.fakes import FakeAsyncEngine, FakeEngine

PARAMS = SamplingParams(max_tokens=3)


def metric_value(metrics: BackendMetrics, sample: str) -> float:
    """One sample of the batcher's metrics, as Prometheus renders it."""
    for line in metrics.render().decode().splitlines():
        if line.rsplit(" ", 1)[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in metrics")


def submit(batcher: Batcher, rid: str, params: SamplingParams = PARAMS) -> Generation:
    return batcher.submit([1, 2, 3], params, request_id=rid)


async def wait_started(engine: FakeEngine) -> None:
    assert await asyncio.to_thread(engine.batch_started.wait, 5)
    engine.batch_started.clear()


async def test_size_cap_splits_a_burst() -> None:
    engine = FakeEngine()
    async with Batcher(engine, max_batch_size=4, max_wait_ms=50) as batcher:
        gens = [submit(batcher, f"r{i}") for i in range(10)]
        results = await asyncio.gather(*(g.collect() for g in gens))
    assert [len(b) for b in engine.batches] == [4, 4, 2]
    assert [rid for b in engine.batches for rid in b] == [f"r{i}" for i in range(10)]
    assert all(r.finish_reason == "length" and r.completion_tokens == 3 for r in results)
    assert results[0].text == "def"


async def test_window_gathers_requests_arriving_within_it() -> None:
    engine = FakeEngine()
    async with Batcher(engine, max_batch_size=8, max_wait_ms=150) as batcher:
        start = time.monotonic()
        first = submit(batcher, "a")
        await asyncio.sleep(0.03)
        second = submit(batcher, "b")
        await first.collect()
        waited = time.monotonic() - start
        await second.collect()
        await asyncio.sleep(0.2)
        third = submit(batcher, "c")
        await third.collect()
    assert engine.batches == [["a", "b"], ["c"]]
    assert waited >= 0.15


async def test_zero_window_runs_a_lone_request_at_once() -> None:
    engine = FakeEngine()
    async with Batcher(engine, max_batch_size=8, max_wait_ms=0) as batcher:
        start = time.monotonic()
        await submit(batcher, "a").collect()
        assert time.monotonic() - start < 0.1


async def test_arrivals_during_a_running_batch_wait_for_the_next() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    async with Batcher(engine, max_batch_size=8, max_wait_ms=0) as batcher:
        a = submit(batcher, "a")
        await wait_started(engine)
        b, c = submit(batcher, "b"), submit(batcher, "c")
        assert batcher.queue_depth == 2
        engine.hold.set()
        await asyncio.gather(a.collect(), b.collect(), c.collect())
    assert engine.batches == [["a"], ["b", "c"]]


async def test_full_queue_rejects_at_once() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    metrics = BackendMetrics()
    async with Batcher(engine, max_batch_size=1, max_wait_ms=0, max_queue=2, metrics=metrics) as b:
        running = submit(b, "run")
        await wait_started(engine)
        queued = [submit(b, "q1"), submit(b, "q2")]
        with pytest.raises(QueueFull) as info:
            submit(b, "q3")
        assert info.value.status_code == 429
        assert info.value.headers["Retry-After"] == "1"
        engine.hold.set()
        await asyncio.gather(running.collect(), *(g.collect() for g in queued))
    assert metrics.requests.labels(outcome="rejected")._value.get() == 1
    assert metrics.requests.labels(outcome="ok")._value.get() == 3


async def test_deadline_expires_queued_and_running_requests() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    async with Batcher(engine, max_batch_size=1, max_wait_ms=0, timeout_s=0.2) as batcher:
        running = submit(batcher, "run")
        await wait_started(engine)
        queued = submit(batcher, "queued")
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await queued.collect()
        assert 0.1 < time.monotonic() - start < 1.0
        assert batcher.queue_depth == 0
        with pytest.raises(DeadlineExceeded) as info:
            await running.collect()
        assert info.value.status_code == 504
        assert engine.rows["run"].cancelled()
        engine.hold.set()
    assert "queued" not in engine.rows


async def test_cancel_removes_a_queued_request_and_stops_a_running_row() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    engine.hold.clear()
    async with Batcher(engine, max_batch_size=1, max_wait_ms=0) as batcher:
        running = submit(batcher, "run", SamplingParams(max_tokens=10_000))
        await wait_started(engine)
        queued = submit(batcher, "queued")
        queued.cancel()
        assert batcher.queue_depth == 0
        engine.hold.set()
        first = await anext(running)
        assert first.finish_reason is None
        running.cancel()
        assert engine.rows["run"].cancelled()
        for _ in range(200):
            if "run" in engine.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        assert "run" in engine.seen_cancelled
    assert engine.batches == [["run"]]


async def test_engine_failure_reaches_every_request_and_the_loop_goes_on() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    engine.fail_next = RuntimeError("boom")
    async with Batcher(engine, max_batch_size=4, max_wait_ms=20) as batcher:
        gens = [submit(batcher, f"r{i}") for i in range(3)]
        engine.hold.set()
        results = await asyncio.gather(*(g.collect() for g in gens), return_exceptions=True)
        assert all(isinstance(r, EngineFailed) and "boom" in str(r) for r in results)
        after = await submit(batcher, "after").collect()
    assert isinstance(after, Completion) and after.finish_reason == "length"


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_a_row_that_fails_alone_fails_only_its_request(batching: BatchingMode) -> None:
    engine = FakeEngine()
    engine.hold.clear()
    engine.fail_token, engine.fail_step = 9, 1
    metrics = BackendMetrics()
    async with Batcher(
        engine, max_batch_size=4, max_wait_ms=20, batching=batching, metrics=metrics
    ) as batcher:
        bad = batcher.submit([1, 9, 3], PARAMS, request_id="bad")
        good = submit(batcher, "good")
        engine.hold.set()
        first = await anext(bad)  # the row's first step went well, its second fails
        with pytest.raises(EngineFailed, match="row failure at step 1"):
            await anext(bad)
        done = await good.collect()
        after = await submit(batcher, "after").collect()
    assert engine.batches[0] == ["bad", "good"]
    assert first.text and first.finish_reason is None
    assert done.text == "def" and done.finish_reason == "length"
    assert after.finish_reason == "length"
    text = metrics.render().decode()
    assert 'sluice_backend_requests_total{outcome="error"} 1.0' in text
    assert 'sluice_backend_requests_total{outcome="ok"} 2.0' in text


async def test_drain_finishes_queued_and_running_then_refuses() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, drain_timeout_s=5)
    await batcher.__aenter__()
    gens = [submit(batcher, f"r{i}") for i in range(3)]
    await wait_started(engine)
    exiting = asyncio.create_task(batcher.__aexit__(None, None, None))
    await asyncio.sleep(0.02)
    with pytest.raises(ShuttingDown) as info:
        submit(batcher, "late")
    assert info.value.status_code == 503
    engine.hold.set()
    results = await asyncio.gather(*(g.collect() for g in gens))
    await exiting
    assert [r.finish_reason for r in results] == ["length"] * 3
    assert engine.batches == [["r0"], ["r1"], ["r2"]]


async def test_drain_timeout_fails_what_is_left() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, drain_timeout_s=0.2)
    await batcher.__aenter__()
    gens = [submit(batcher, f"r{i}") for i in range(2)]
    await wait_started(engine)
    # The engine thread only returns after the drain gave up on it.
    asyncio.get_running_loop().call_later(0.4, engine.hold.set)
    await batcher.__aexit__(None, None, None)
    results = await asyncio.gather(*(g.collect() for g in gens), return_exceptions=True)
    assert all(isinstance(r, ShuttingDown) for r in results)
    assert engine.rows["r0"].cancelled()


async def test_submit_outside_the_context_is_an_error() -> None:
    batcher = Batcher(FakeEngine())
    with pytest.raises(RuntimeError, match="not running"):
        submit(batcher, "x")
    async with batcher:
        pass
    with pytest.raises(RuntimeError, match="cannot be reopened"):
        await batcher.__aenter__()


async def test_continuous_admits_a_newcomer_while_a_row_is_generating() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    async with Batcher(engine, max_batch_size=4, batching="continuous") as batcher:
        long = submit(batcher, "long", SamplingParams(max_tokens=400))
        await anext(long)
        short = await submit(batcher, "short", SamplingParams(max_tokens=2)).collect()
        assert short.completion_tokens == 2
        assert "long" in batcher._running
        long.cancel()
    assert "long" in engine.seen_cancelled
    assert engine.batches == [["long"], ["short"]]


async def test_continuous_gathers_a_quick_stream_of_newcomers_into_one_prefill() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    # A pass so dear that sharing it is worth a wait: each arrival is held back until the
    # summed wait reaches what an early pass would cost the running row (1 row x 1.5 s).
    engine.pass_cost_s = 1.5
    async with Batcher(engine, max_batch_size=8, batching="continuous") as batcher:
        long = submit(batcher, "long", SamplingParams(max_tokens=10_000))
        await anext(long)
        gens = []
        for i in range(3):
            gens.append(submit(batcher, f"r{i}", SamplingParams(max_tokens=2)))
            await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.gather(*(g.collect() for g in gens))
        held = time.monotonic() - started
        long.cancel()
    assert engine.batches == [["long"], ["r0", "r1", "r2"]]
    assert held < 1.5, "no one waits past what admitting at once would have cost"


async def test_continuous_admits_a_lone_newcomer_at_once_under_light_load() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    engine.pass_cost_s = 0.01  # few arrivals per pass: holding back would gain nothing
    async with Batcher(engine, max_batch_size=8, batching="continuous") as batcher:
        long = submit(batcher, "long", SamplingParams(max_tokens=10_000))
        await anext(long)
        started = time.monotonic()
        await submit(batcher, "short", SamplingParams(max_tokens=2)).collect()
        assert time.monotonic() - started < 0.2
        long.cancel()
    assert engine.batches == [["long"], ["short"]]


async def test_continuous_never_holds_more_than_max_batch_size_rows() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    async with Batcher(engine, max_batch_size=2, batching="continuous") as batcher:
        gens = [submit(batcher, f"r{i}", SamplingParams(max_tokens=20)) for i in range(3)]
        await anext(gens[0])
        assert batcher.queue_depth == 1
        await asyncio.gather(*(g.collect() for g in gens))
    assert engine.batches == [["r0", "r1"], ["r2"]]


async def test_continuous_survives_an_engine_failure() -> None:
    engine = FakeEngine()
    engine.fail_next = RuntimeError("boom")
    async with Batcher(engine, max_batch_size=4, batching="continuous") as batcher:
        with pytest.raises(EngineFailed, match="boom"):
            await submit(batcher, "first").collect()
        after = await submit(batcher, "after").collect()
    assert after.finish_reason == "length"


async def test_continuous_drain_finishes_running_rows() -> None:
    engine = FakeEngine(step_delay_s=0.005)
    batcher = Batcher(engine, max_batch_size=1, batching="continuous", drain_timeout_s=5)
    await batcher.__aenter__()
    gens = [submit(batcher, f"r{i}", SamplingParams(max_tokens=10)) for i in range(2)]
    await anext(gens[0])
    exiting = asyncio.create_task(batcher.__aexit__(None, None, None))
    await asyncio.sleep(0.01)
    with pytest.raises(ShuttingDown):
        submit(batcher, "late")
    results = await asyncio.gather(*(g.collect() for g in gens))
    await exiting
    assert [r.completion_tokens for r in results] == [10, 10]


def test_continuous_needs_an_engine_that_supports_it() -> None:
    class WindowOnly:
        run_batch = FakeEngine.run_batch

    with pytest.raises(ValueError, match="run_continuous"):
        Batcher(WindowOnly(), batching="continuous")  # type: ignore[arg-type]


# -- an async engine: rows are tasks on the batcher's loop ------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Yields to the loop until the condition holds (the tasks under test run meanwhile)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def test_async_window_starts_a_batch_together_and_the_next_as_rows_free_up() -> None:
    engine = FakeAsyncEngine(step_delay_s=0.005)
    engine.gate.clear()
    metrics = BackendMetrics()
    short, long = SamplingParams(max_tokens=1), SamplingParams(max_tokens=60)
    async with Batcher(engine, max_batch_size=3, max_wait_ms=0, metrics=metrics) as batcher:
        gens = [submit(batcher, "r0", short)]
        gens += [submit(batcher, f"r{i}", long) for i in range(1, 5)]
        await until(lambda: len(engine.started()) == 3)
        await asyncio.sleep(0.05)  # time enough for a wrongly early next batch to start
        assert engine.started() == ["r0", "r1", "r2"]
        assert batcher.queue_depth == 2
        engine.gate.set()
        # r0's row frees first: r3 starts in it while r1 and r2 are still generating.
        await until(lambda: "r3" in engine.started())
        assert engine.live >= {"r1", "r2"}
        assert "r4" not in engine.started()
        results = await asyncio.gather(*(g.collect() for g in gens))
    assert engine.started() == ["r0", "r1", "r2", "r3", "r4"]
    assert engine.max_live == 3
    assert [r.completion_tokens for r in results] == [1, 60, 60, 60, 60]
    assert metric_value(metrics, "sluice_backend_batch_size_count") == 3
    assert metric_value(metrics, "sluice_backend_batch_size_sum") == 5
    assert metric_value(metrics, "sluice_backend_batch_run_seconds_count") == 3
    assert metric_value(metrics, 'sluice_backend_requests_total{outcome="ok"}') == 5


async def test_async_window_holds_a_lone_request_for_the_window() -> None:
    engine = FakeAsyncEngine()
    async with Batcher(engine, max_batch_size=3, max_wait_ms=300) as batcher:
        first = submit(batcher, "r0")
        await asyncio.sleep(0.1)
        assert engine.started() == []  # the window is still open
        second, third = submit(batcher, "r1"), submit(batcher, "r2")
        # Three queued fill the free rows: the batch closes before its window ends.
        await until(lambda: len(engine.started()) == 3)
        started = time.monotonic()
        late = submit(batcher, "r3")
        await late.collect()
        assert time.monotonic() - started >= 0.25  # a new window, even with rows free
        await asyncio.gather(first.collect(), second.collect(), third.collect())
    assert engine.started() == ["r0", "r1", "r2", "r3"]


async def test_async_continuous_starts_a_late_row_while_another_runs() -> None:
    engine = FakeAsyncEngine(step_delay_s=0.005)
    async with Batcher(engine, max_batch_size=4, batching="continuous") as batcher:
        long = submit(batcher, "long", SamplingParams(max_tokens=400))
        await anext(long)
        short = await submit(batcher, "short", SamplingParams(max_tokens=2)).collect()
        assert short.completion_tokens == 2
        assert engine.live == {"long"}
        long.cancel()
        await until(lambda: not engine.live)
    assert engine.events == [
        ("start", "long"),
        ("start", "short"),
        ("end", "short"),
        ("cancelled", "long"),
    ]


async def test_async_continuous_never_serves_more_than_max_batch_size_rows() -> None:
    engine = FakeAsyncEngine(step_delay_s=0.005)
    async with Batcher(engine, max_batch_size=2, batching="continuous") as batcher:
        gens = [submit(batcher, f"r{i}", SamplingParams(max_tokens=20)) for i in range(3)]
        await anext(gens[0])
        assert batcher.queue_depth == 1
        results = await asyncio.gather(*(g.collect() for g in gens))
    assert engine.max_live == 2
    assert engine.started() == ["r0", "r1", "r2"]
    assert [r.completion_tokens for r in results] == [20, 20, 20]


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_async_cancel_removes_a_queued_request_and_cancels_a_running_row(
    batching: BatchingMode,
) -> None:
    engine = FakeAsyncEngine()
    metrics = BackendMetrics()
    async with Batcher(
        engine, max_batch_size=1, max_wait_ms=0, batching=batching, metrics=metrics
    ) as batcher:
        running = submit(batcher, "run", SamplingParams(max_tokens=10_000))
        first = await anext(running)
        assert first.finish_reason is None
        queued = submit(batcher, "queued")
        queued.cancel()
        assert batcher.queue_depth == 0
        running.cancel()
        await until(lambda: "run" in engine.seen_cancelled)
        after = await submit(batcher, "after").collect()
    assert engine.started() == ["run", "after"]
    assert after.finish_reason == "length"
    assert metric_value(metrics, 'sluice_backend_requests_total{outcome="cancelled"}') == 2


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_async_deadline_cancels_the_running_row(batching: BatchingMode) -> None:
    engine = FakeAsyncEngine()
    engine.gate.clear()  # the row never produces anything: only a cancel can end it
    async with Batcher(
        engine, max_batch_size=1, max_wait_ms=0, timeout_s=0.2, batching=batching
    ) as batcher:
        running = submit(batcher, "run")
        queued = submit(batcher, "queued")
        with pytest.raises(DeadlineExceeded):
            await queued.collect()
        with pytest.raises(DeadlineExceeded):
            await running.collect()
        await until(lambda: "run" in engine.seen_cancelled)
        engine.gate.set()
        after = await submit(batcher, "after").collect()
    assert engine.started() == ["run", "after"]
    assert after.finish_reason == "length"


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_async_a_row_that_fails_fails_only_its_request(batching: BatchingMode) -> None:
    engine = FakeAsyncEngine()
    engine.gate.clear()
    engine.fail_token, engine.fail_step = 9, 1
    engine.raise_token = 8
    metrics = BackendMetrics()
    async with Batcher(
        engine, max_batch_size=4, max_wait_ms=20, batching=batching, metrics=metrics
    ) as batcher:
        bad = batcher.submit([1, 9, 3], PARAMS, request_id="bad")
        raising = batcher.submit([1, 8, 3], PARAMS, request_id="raising")
        good = submit(batcher, "good")
        await until(lambda: len(engine.started()) == 3)
        engine.gate.set()
        first = await anext(bad)  # the row's first step went well, its second fails
        with pytest.raises(EngineFailed, match="row failure at step 1"):
            await anext(bad)
        with pytest.raises(EngineFailed, match="boom"):
            await raising.collect()
        done = await good.collect()
        after = await submit(batcher, "after").collect()
    assert first.text and first.finish_reason is None
    assert done.text == "def" and done.finish_reason == "length"
    assert after.finish_reason == "length"
    assert metric_value(metrics, 'sluice_backend_requests_total{outcome="error"}') == 2
    assert metric_value(metrics, 'sluice_backend_requests_total{outcome="ok"}') == 2


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_async_drain_finishes_queued_and_running_then_refuses(
    batching: BatchingMode,
) -> None:
    engine = FakeAsyncEngine()
    engine.gate.clear()
    batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, batching=batching, drain_timeout_s=5)
    await batcher.__aenter__()
    gens = [submit(batcher, f"r{i}") for i in range(3)]
    await until(lambda: engine.started() == ["r0"])
    exiting = asyncio.create_task(batcher.__aexit__(None, None, None))
    await asyncio.sleep(0.02)
    with pytest.raises(ShuttingDown):
        submit(batcher, "late")
    engine.gate.set()
    results = await asyncio.gather(*(g.collect() for g in gens))
    await exiting
    assert [r.finish_reason for r in results] == ["length"] * 3
    assert engine.started() == ["r0", "r1", "r2"]


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_async_drain_timeout_fails_and_cancels_what_is_left(batching: BatchingMode) -> None:
    engine = FakeAsyncEngine()
    engine.gate.clear()
    batcher = Batcher(
        engine, max_batch_size=1, max_wait_ms=0, batching=batching, drain_timeout_s=0.2
    )
    await batcher.__aenter__()
    gens = [submit(batcher, f"r{i}") for i in range(2)]
    await until(lambda: engine.started() == ["r0"])
    await batcher.__aexit__(None, None, None)
    results = await asyncio.gather(*(g.collect() for g in gens), return_exceptions=True)
    assert all(isinstance(r, ShuttingDown) for r in results)
    assert engine.seen_cancelled == {"r0"}
    assert not engine.live
    assert engine.started() == ["r0"]
