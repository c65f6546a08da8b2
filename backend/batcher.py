"""Gathers concurrent requests into batches and runs them on the engine.

One private record per request holds its output channel (an asyncio queue). A window batch
opens with the oldest queued request and closes when `max_wait_ms` has passed since that
request arrived or `max_batch_size` requests are in it. In continuous mode queued requests
join the running batch as soon as fewer than `max_batch_size` rows are live.

Engines come in two kinds. A thread engine (`Engine`, the torch engine) runs a whole batch or
continuous run in one worker thread and hands its outputs to the loop through
`loop.call_soon_threadsafe`; in window mode requests arriving while a batch runs wait for
the next (static batching). An async engine (`AsyncEngine`, vLLM) schedules rows itself:
each row is a task on this event loop whose outputs go straight to its channel, and
cancelling the task stops the row in the engine. Its scheduler merges a new batch into the
running one step by step, so a closed window batch starts as soon as rows are free for it
(at most `max_batch_size` live) rather than after the previous batch has ended.

Every accepted request gets exactly one answer: its final output or one error (the
engine's failure on the batch, or on this request's row alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, cast

from backend.admission import ArrivalRate, hold_back
from backend.engines.base import (
    AnyEngine,
    AsyncEngine,
    ContinuousEngine,
    Emit,
    Engine,
    FinishReason,
    Row,
    RowOutput,
    SamplingParams,
    is_async_engine,
)
from backend.errors import BackendError, DeadlineExceeded, EngineFailed, QueueFull, ShuttingDown
from backend.metrics import BackendMetrics

log = logging.getLogger("sluice.backend.batcher")

BatchingMode = Literal["window", "continuous"]
# A worker thread that ignores cancelled rows, or a cancelled row task of an async engine,
# still gets this long to return at shutdown.
_WORKER_GRACE_S = 5.0


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class _Status(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(eq=False)
class _Pending:
    """The batcher's private record of one request."""

    row: Row
    arrived: float
    channel: asyncio.Queue[RowOutput | BackendError] = field(default_factory=asyncio.Queue)
    state: _State = _State.QUEUED
    # Written on the event loop, read by the engine thread between steps (a plain bool is
    # atomic under the GIL, which is all the engine needs).
    cancel_flag: bool = False
    timer: asyncio.TimerHandle | None = None
    # An async engine's row runs in this task; cancelling it stops the row in the engine.
    task: asyncio.Task[None] | None = None

    def is_cancelled(self) -> bool:
        return self.cancel_flag


@dataclass(frozen=True, kw_only=True)
class Completion:
    """A finished generation, gathered from all of its outputs."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class Generation:
    """The caller's handle on one accepted request: an async stream of its outputs."""

    def __init__(self, pending: _Pending, batcher: Batcher) -> None:
        self._pending = pending
        self._batcher = batcher
        self._finished = False

    @property
    def request_id(self) -> str:
        return self._pending.row.request_id

    @property
    def prompt_tokens(self) -> int:
        return len(self._pending.row.prompt_token_ids)

    def __aiter__(self) -> AsyncIterator[RowOutput]:
        return self

    async def __anext__(self) -> RowOutput:
        if self._finished:
            raise StopAsyncIteration
        item = await self._pending.channel.get()
        if isinstance(item, BackendError):
            self._finished = True
            raise item
        if item.finish_reason is not None:
            self._finished = True
        return item

    async def collect(self) -> Completion:
        """Waits for the whole generation and returns it as one completion."""
        texts: list[str] = []
        token_ids: list[int] = []
        async for out in self:
            texts.append(out.text)
            token_ids.extend(out.token_ids)
            if out.finish_reason is not None:
                return Completion(
                    text="".join(texts),
                    token_ids=tuple(token_ids),
                    finish_reason=out.finish_reason,
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                )
        raise EngineFailed("The generation ended without a final output.")

    def cancel(self) -> None:
        """The caller has gone: drop the request if queued, stop its row if generating."""
        if not self._finished:
            self._finished = True
            self._batcher._cancel(self._pending)


class Batcher:
    """Runs an engine over time-windowed batches of queued requests.

    Args:
        engine: the loaded model. A thread engine's `run_batch` / `run_continuous` is
            called in one worker thread; an async engine's rows run as tasks on the loop.
        max_batch_size: most requests in one batch (1 disables batching).
        max_wait_ms: how long a batch stays open after its oldest request arrived.
        max_queue: most requests waiting for a batch; past it `submit` raises QueueFull.
        timeout_s: per-request deadline from arrival to the final output.
        drain_timeout_s: at exit, how long queued and running requests get to finish.
        batching: "window" (closed batches); "continuous" admits queued requests while
            others generate, up to max_batch_size rows at once (max_wait_ms is not used
            then). A thread engine needs `run_continuous` for it; an async engine is handed
            each request as soon as a row is free and schedules it itself.
        metrics: where to record queue depth, batch sizes, waits and outcomes.
    """

    def __init__(
        self,
        engine: AnyEngine,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 10,
        max_queue: int = 1024,
        timeout_s: float = 60,
        drain_timeout_s: float = 30,
        batching: BatchingMode = "window",
        metrics: BackendMetrics | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self._async_engine: AsyncEngine | None = None
        self._thread_engine: Engine | None = None
        if is_async_engine(engine):
            self._async_engine = engine
        else:
            if batching == "continuous" and not callable(getattr(engine, "run_continuous", None)):
                raise ValueError("batching='continuous' needs an engine with run_continuous()")
            self._thread_engine = cast(Engine, engine)
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._max_queue = max_queue
        self._timeout_s = timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._batching = batching
        self._metrics = metrics if metrics is not None else BackendMetrics()
        self._queue: deque[_Pending] = deque()
        self._arrivals = ArrivalRate()
        self._running: dict[str, _Pending] = {}
        self._status = _Status.UNOPENED
        self._arrival: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Live row tasks of an async engine; a row leaves this set once its task has ended.
        self._row_tasks: set[asyncio.Task[None]] = set()

    @property
    def accepting(self) -> bool:
        """True while new requests are taken (not before start, not while draining)."""
        return self._status is _Status.OPEN and self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def __aenter__(self) -> Batcher:
        if self._status is not _Status.UNOPENED:
            raise RuntimeError("A Batcher cannot be reopened once it has been started.")
        self._loop = asyncio.get_running_loop()
        self._arrival = asyncio.Event()
        if self._async_engine is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-engine")
        self._status = _Status.OPEN
        if self._async_engine is not None:
            loop_fn = self._async_rows_loop
        elif self._batching == "window":
            loop_fn = self._window_loop
        else:
            loop_fn = self._continuous_loop
        # The batcher holds the only strong reference to its loop task until exit.
        self._task = asyncio.create_task(loop_fn(), name="sluice-batcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Stops accepting, lets queued and running work finish in time, then fails the rest."""
        if self._status in (_Status.UNOPENED, _Status.CLOSED) or self._task is None:
            self._status = _Status.CLOSED
            return
        self._status = _Status.DRAINING
        self._wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._drain_timeout_s)
        except TimeoutError:
            log.warning(
                "drain timed out after %.1f s; failing unfinished requests", self._drain_timeout_s
            )
        except Exception:
            log.exception("batcher loop failed")
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._fail_all(ShuttingDown("The backend shut down before the request finished."))
            self._status = _Status.CLOSED
            await self._stop_row_tasks()
            await self._stop_worker()

    def submit(
        self, prompt_token_ids: Sequence[int], params: SamplingParams, *, request_id: str = ""
    ) -> Generation:
        """Queues one request; raises QueueFull or ShuttingDown at once instead of waiting."""
        if self._status is _Status.UNOPENED or self._loop is None:
            raise RuntimeError("The Batcher is not running; use `async with Batcher(...)`.")
        if not self.accepting:
            self._metrics.count_request("unavailable")
            raise ShuttingDown()
        if len(self._queue) >= self._max_queue:
            self._metrics.count_request("rejected")
            raise QueueFull(self._max_queue)
        row = Row(
            request_id=request_id or uuid.uuid4().hex,
            prompt_token_ids=list(prompt_token_ids),
            params=params,
        )
        pending = _Pending(row=row, arrived=self._loop.time())
        row.cancelled = pending.is_cancelled
        pending.timer = self._loop.call_at(pending.arrived + self._timeout_s, self._expire, pending)
        self._queue.append(pending)
        self._arrivals.record(pending.arrived)
        self._metrics.queue_depth.set(len(self._queue))
        self._wake()
        return Generation(pending, self)

    # -- window mode -------------------------------------------------------------------

    async def _window_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            if batch:
                await self._run_batch(batch)

    async def _next_batch(self) -> list[_Pending] | None:
        """Waits for the window of the oldest queued request; None once drained."""
        assert self._loop is not None
        while not self._queue:
            if self._status is not _Status.OPEN:
                return None
            await self._wait_arrival(None)
        while self._status is _Status.OPEN and self._queue:
            if len(self._queue) >= self._max_batch_size:
                break
            remaining = self._queue[0].arrived + self._max_wait_s - self._loop.time()
            if remaining <= 0:
                break
            await self._wait_arrival(remaining)
        return self._take(self._max_batch_size)

    def _take(self, max_rows: int) -> list[_Pending]:
        """Pops up to max_rows queued requests and marks them running."""
        assert self._loop is not None
        batch: list[_Pending] = []
        now = self._loop.time()
        while self._queue and len(batch) < max_rows:
            pending = self._queue.popleft()
            pending.state = _State.RUNNING
            self._running[pending.row.request_id] = pending
            self._metrics.queue_wait_seconds.observe(now - pending.arrived)
            self._metrics.prompt_tokens.inc(len(pending.row.prompt_token_ids))
            batch.append(pending)
        self._metrics.queue_depth.set(len(self._queue))
        if batch:
            self._metrics.batch_size.observe(len(batch))
            self._metrics.running_rows.set(len(self._running))
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """Runs a closed batch on a thread engine, in the worker thread."""
        assert self._loop is not None and self._executor is not None
        assert self._thread_engine is not None
        rows = [p.row for p in batch]
        started = time.perf_counter()
        try:
            await self._loop.run_in_executor(
                self._executor, self._thread_engine.run_batch, rows, self._emitter()
            )
        except Exception as exc:
            log.exception("engine failed on a batch of %d", len(batch))
            for pending in batch:
                self._finish(pending, EngineFailed(f"The engine failed: {exc}"), "error")
        finally:
            self._metrics.batch_run_seconds.observe(time.perf_counter() - started)
        for pending in batch:
            self._finish(pending, EngineFailed("The engine did not finish this request."), "error")
            self._running.pop(pending.row.request_id, None)
        self._metrics.running_rows.set(len(self._running))

    # -- continuous mode ---------------------------------------------------------------

    async def _continuous_loop(self) -> None:
        """Hands a thread engine one long run that admits queued requests between steps."""
        assert self._loop is not None and self._executor is not None
        engine = cast(ContinuousEngine, self._thread_engine)
        loop = self._loop

        def admit(free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
            # Engines ask between steps, often with nothing queued: answering that from this
            # thread (a deque's length is safe to read under the GIL) spares a round trip
            # through the event loop, which contended for the GIL with the engine and HTTP.
            if free < 1 or (not idle and not self._queue):
                return []
            future = asyncio.run_coroutine_threadsafe(self._admit(free, idle, pass_cost_s), loop)
            while True:
                try:
                    return future.result(timeout=0.5)
                except FutureTimeout:
                    # A timed-out drain may have stopped the loop: end the engine's run.
                    if self._status is _Status.CLOSED or loop.is_closed():
                        future.cancel()
                        return []

        def run() -> None:
            engine.run_continuous(admit, self._emitter(), max_rows=self._max_batch_size)

        while True:
            error: BackendError = EngineFailed("The engine did not finish this request.")
            try:
                await loop.run_in_executor(self._executor, run)
            except Exception as exc:
                log.exception("engine failed in continuous mode")
                error = EngineFailed(f"The engine failed: {exc}")
            for pending in list(self._running.values()):
                self._finish(pending, error, "error")
            self._running.clear()
            self._metrics.running_rows.set(0)
            # The run ends normally only once draining left nothing to admit; after a
            # failure, a fresh run serves the requests still queued and those to come.
            if self._status is not _Status.OPEN and not self._queue:
                return

    async def _admit(self, free: int, idle: bool, pass_cost_s: float) -> list[Row]:
        """Rows for the engine's free slots; when idle, waits for one (none once draining).

        While rows run, newcomers may be held back a step so that more share their prefill
        pass (backend/admission.py).
        """
        assert self._loop is not None
        while idle and not self._queue and self._status is _Status.OPEN:
            await self._wait_arrival(None)
        now = self._loop.time()
        waits = [now - p.arrived for p in itertools.islice(self._queue, free)]
        if self._status is _Status.OPEN and hold_back(
            waits,
            free=free,
            live=self._max_batch_size - free,
            pass_cost_s=pass_cost_s,
            arrival_rate=self._arrivals.per_second(now),
        ):
            return []
        return [p.row for p in self._take(free)]

    # -- rows of an async engine ---------------------------------------------------------

    async def _async_rows_loop(self) -> None:
        """Starts queued requests on the async engine while fewer than max_batch_size are live.

        Continuous mode starts each at once; window mode starts a group together once its
        oldest request has waited `max_wait_ms` or the queue fills the free rows. Wakes on
        arrivals and when a row task ends, with no polling.
        """
        while True:
            free = self._max_batch_size - len(self._row_tasks)
            wait: float | None = None
            if free > 0 and self._queue:
                wait = self._window_left(free)
                if wait <= 0:
                    self._start_rows(self._take(free))
                    continue
            if self._status is not _Status.OPEN and not self._queue and not self._row_tasks:
                return
            await self._wait_arrival(wait)

    def _window_left(self, free: int) -> float:
        """Seconds until the queued requests start on an async engine (<= 0: now)."""
        assert self._loop is not None
        if self._batching == "continuous" or self._status is not _Status.OPEN:
            return 0
        if len(self._queue) >= free:
            return 0
        return self._queue[0].arrived + self._max_wait_s - self._loop.time()

    def _start_rows(self, batch: list[_Pending]) -> None:
        """Starts a batch's rows together; its run time is recorded once all have ended."""
        started = time.perf_counter()
        ended = asyncio.gather(*(self._start_row(p) for p in batch), return_exceptions=True)
        ended.add_done_callback(
            lambda _: self._metrics.batch_run_seconds.observe(time.perf_counter() - started)
        )

    def _start_row(self, pending: _Pending) -> asyncio.Task[None]:
        """Runs one taken request as a task on this loop."""
        task = asyncio.create_task(
            self._serve_row(pending), name=f"sluice-row-{pending.row.request_id}"
        )
        pending.task = task
        # The batcher holds the strong references to its row tasks until they end.
        self._row_tasks.add(task)
        # A callback rather than `finally`: a task cancelled before it first ran has no body
        # to run one, and its row must still leave.
        task.add_done_callback(functools.partial(self._row_ended, pending))
        return task

    async def _serve_row(self, pending: _Pending) -> None:
        assert self._async_engine is not None
        try:
            async for output in self._async_engine.stream_row(pending.row):
                self._on_output(output)
        except Exception as exc:
            # Only this row failed (a dead engine fails each of its rows this way).
            log.exception("engine failed on request %s", pending.row.request_id)
            self._finish(pending, EngineFailed(f"The engine failed: {exc}"), "error")

    def _row_ended(self, pending: _Pending, task: asyncio.Task[None]) -> None:
        self._row_tasks.discard(task)
        pending.task = None
        self._finish(pending, EngineFailed("The engine did not finish this request."), "error")
        if self._running.pop(pending.row.request_id, None) is not None:
            self._metrics.running_rows.set(len(self._running))
        # A row is free: continuous mode may start a queued request, or a drain may end.
        self._wake()

    async def _stop_row_tasks(self) -> None:
        """Cancels the row tasks still live after a drain and waits briefly for them."""
        tasks = list(self._row_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_WORKER_GRACE_S)
            if late:
                log.warning("%d row tasks still running after shutdown; leaving them", len(late))

    # -- shared machinery ----------------------------------------------------------------

    def _emitter(self) -> Emit:
        """An emit callback for a thread engine's worker that hands each output to the loop."""
        loop = self._loop
        assert loop is not None

        def emit(output: RowOutput) -> None:
            # After a timed-out drain the loop may be closed; the output has no reader then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_output, output)

        return emit

    def _on_output(self, output: RowOutput) -> None:
        pending = self._running.get(output.request_id)
        if pending is None:
            return
        if output.finish_reason is not None or output.error is not None:
            self._metrics.generated_tokens.inc(output.completion_tokens)
            self._running.pop(output.request_id, None)
            self._metrics.running_rows.set(len(self._running))
            if output.error is None:
                self._finish(pending, output, "ok")
            else:
                # Only this row failed: its batch mates carry on.
                log.error("engine failed on request %s: %s", output.request_id, output.error)
                failed = EngineFailed(f"The engine failed on this request: {output.error}")
                self._finish(pending, failed, "error")
        elif pending.state is _State.RUNNING:
            pending.channel.put_nowait(output)

    def _finish(self, pending: _Pending, item: RowOutput | BackendError, outcome: str) -> None:
        """Gives a request its one final answer; later calls for it do nothing."""
        if pending.state is _State.DONE:
            return
        pending.state = _State.DONE
        if pending.timer is not None:
            pending.timer.cancel()
        pending.channel.put_nowait(item)
        self._metrics.count_request(outcome)

    def _cancel(self, pending: _Pending) -> None:
        if pending.state is _State.DONE:
            return
        self._stop_row(pending)
        if pending.state is _State.QUEUED:
            self._remove_queued(pending)
        pending.state = _State.DONE
        if pending.timer is not None:
            pending.timer.cancel()
        self._metrics.count_request("cancelled")

    def _expire(self, pending: _Pending) -> None:
        self._stop_row(pending)
        if pending.state is _State.QUEUED:
            self._remove_queued(pending)
        self._finish(pending, DeadlineExceeded(self._timeout_s), "timeout")

    @staticmethod
    def _stop_row(pending: _Pending) -> None:
        """Tells the engine to drop the row: a flag for thread engines, a task cancel for async."""
        pending.cancel_flag = True
        if pending.task is not None:
            pending.task.cancel()

    def _remove_queued(self, pending: _Pending) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(pending)
        self._metrics.queue_depth.set(len(self._queue))
        # The oldest request may have gone: the window loop re-reads its deadline.
        self._wake()

    def _fail_all(self, error: BackendError) -> None:
        while self._queue:
            self._finish(self._queue.popleft(), error, "unavailable")
        for pending in list(self._running.values()):
            self._stop_row(pending)
            self._finish(pending, error, "unavailable")
        self._running.clear()
        self._metrics.queue_depth.set(0)
        self._metrics.running_rows.set(0)

    def _wake(self) -> None:
        if self._arrival is not None:
            self._arrival.set()

    async def _wait_arrival(self, timeout: float | None) -> None:
        assert self._arrival is not None
        self._arrival.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrival.wait(), timeout)

    async def _stop_worker(self) -> None:
        """Waits briefly for the engine thread (rows are cancelled by now), then lets it go."""
        executor, self._executor = self._executor, None
        if executor is None or self._loop is None:
            return
        done = self._loop.run_in_executor(None, executor.shutdown, True)
        try:
            await asyncio.wait_for(done, _WORKER_GRACE_S)
        except TimeoutError:
            log.warning("engine thread still running after shutdown; leaving it")
