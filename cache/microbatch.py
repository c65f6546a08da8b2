"""Micro-batching: what concurrent callers ask of a model runs as one batch call, in a thread.

Both models of a semantic lookup (the embedder, the verifier's pair classifier) cost mostly a
fixed amount per call on a CPU, so a crowd of lookups is served far sooner by one call for all
of them than by one call each; and a call takes milliseconds, which must not block the event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    """One item waiting for the next batch, with the future its caller awaits."""

    item: In
    future: asyncio.Future[Out] = field(repr=False)


class MicroBatcher(Generic[In, Out]):
    """Runs `run(items) -> results` (one result per item, in order) over whatever is queued.

    A batch opens with the first waiting item and takes everything queued by then (up to
    `max_batch_size`); items that arrive while a batch runs form the next one, so a lone
    caller waits for nothing and a crowd shares the model's fixed cost. Batches run one at a
    time in `executor` (None: asyncio's default pool); pass one single-thread executor to
    several batchers to keep their models from running at once on the same cores.
    Use as `async with MicroBatcher(run) as batcher:`.
    """

    def __init__(
        self,
        run: Callable[[list[In]], Iterable[Out]],
        *,
        max_batch_size: int = 64,
        executor: Executor | None = None,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run = run
        self.max_batch_size = max_batch_size
        self.executor = executor
        self.name = name
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    @property
    def running(self) -> bool:
        return self._worker is not None

    async def __aenter__(self) -> MicroBatcher[In, Out]:
        if self._worker is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve(self._queue), name=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        queue, self._queue = self._queue, None
        while queue is not None and not queue.empty():
            pending = queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError(f"{self.name} closed"))

    async def submit(self, item: In) -> Out:
        """The item's result, computed in whichever batch it joins."""
        return await self._enqueue(item)

    async def submit_all(self, items: Sequence[In]) -> list[Out]:
        """Results for several items, queued together so that they share a batch."""
        futures = [self._enqueue(item) for item in items]
        try:
            return [await future for future in futures]
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # a caller that gave up: its items are not run
                elif not future.cancelled():
                    future.exception()  # seen, so a failed batch logs no stray error

    def _enqueue(self, item: In) -> asyncio.Future[Out]:
        if self._queue is None:
            raise RuntimeError(f"{self.name} used outside `async with`")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
        return future

    async def _serve(self, queue: asyncio.Queue[_Pending[In, Out]]) -> None:
        """Takes a batch, runs it off the event loop, hands each caller its result."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [p for p in batch if not p.future.done()]  # callers that gave up
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run, [p.item for p in batch]
                )
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
