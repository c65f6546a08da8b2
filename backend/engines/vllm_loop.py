"""A private asyncio loop in its own thread, so vLLM's async engine serves callers in any thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs one event loop forever in a daemon thread until `close()`.

    vLLM's `AsyncLLM` binds its output handler to the loop it first runs on; the batcher
    calls engines from a worker thread and the HTTP app runs on another loop, so the engine
    keeps a loop of its own and both sides hand it coroutines.
    """

    def __init__(self, *, name: str = "sluice-vllm-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedules a coroutine on the loop; the future can be waited on from any thread."""
        if self._closed:
            coro.close()
            raise RuntimeError("The engine's event loop has been closed.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the loop and blocks the calling thread for its result."""
        return self.submit(coro).result()

    def close(self, *, timeout_s: float = 10.0) -> None:
        """Cancels what is still running, stops the loop and joins the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _cancel_all(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
