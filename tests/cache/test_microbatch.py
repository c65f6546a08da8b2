"""Micro-batching: concurrent callers share one batch call, run off the event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cache.microbatch import MicroBatcher


class Doubler:
    """A batch function that records each batch (and the thread it ran on), held by a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(items)
        self.threads.append(threading.current_thread().name)
        return [2 * i for i in items]


async def test_one_callers_items_and_concurrent_callers_share_a_batch() -> None:
    run = Doubler()
    async with MicroBatcher(run) as batcher:
        run.gate.clear()  # hold the first batch so that the others queue up behind it
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit_all([i, i + 100])) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        run.gate.set()
        assert await first == 0
        assert await asyncio.gather(*rest) == [[2, 202], [4, 204], [6, 206]]
    assert run.batches == [[0], [1, 101, 2, 102, 3, 103]]
    assert batcher.batches == 2 and batcher.items == 7


async def test_items_of_a_caller_that_gave_up_are_not_run() -> None:
    run = Doubler()
    async with MicroBatcher(run) as batcher:
        run.gate.clear()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit_all([7, 8]))
        kept = asyncio.create_task(batcher.submit(9))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0)
        run.gate.set()
        assert (await first, await kept) == (0, 18)
    assert run.batches == [[0], [9]]


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("model crashed")

    async with MicroBatcher(broken) as batcher:
        results = await asyncio.gather(
            batcher.submit_all([1, 2]), batcher.submit(3), return_exceptions=True
        )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]


async def test_batches_run_in_the_executor_given() -> None:
    run = Doubler()
    with ThreadPoolExecutor(1, thread_name_prefix="models") as executor:
        async with MicroBatcher(run, executor=executor) as batcher:
            assert await batcher.submit_all([1, 2]) == [2, 4]
    assert run.threads[0].startswith("models")


async def test_the_size_limit_splits_a_crowd() -> None:
    run = Doubler()
    async with MicroBatcher(run, max_batch_size=4) as batcher:
        run.gate.clear()
        tasks = [asyncio.create_task(batcher.submit_all([i, i])) for i in range(5)]
        await asyncio.sleep(0.05)
        run.gate.set()
        await asyncio.gather(*tasks)
    assert max(len(b) for b in run.batches) <= 4 and sum(map(len, run.batches)) == 10


async def test_submitting_outside_async_with_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await MicroBatcher(Doubler()).submit(1)
