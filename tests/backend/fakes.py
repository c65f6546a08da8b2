"""Fake engines for backend tests: deterministic text, gated by events.

`FakeEngine` is a thread engine (`run_batch` / `run_continuous`, gated by threading events);
`FakeAsyncEngine` serves rows as tasks on the event loop like the vLLM engine. Both write the
same text for the same row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Sequence

from backend.engines.base import Admit, Emit, FinishReason, Row, RowOutput


class FakeModel:
    """What both fakes share: the model surface (its vocabulary is the 256 byte values) and
    the text, one character per token that depends on the prompt's length and the step.

    `fail_token` / `fail_step`: a row whose prompt holds that token id fails on its own,
    with an error output, at that step. Rows are recorded in `rows`, rows that saw their
    cancellation in `seen_cancelled`.
    """

    def __init__(
        self, *, model_name: str = "fake-model", max_model_len: int = 64, step_delay_s: float = 0
    ) -> None:
        self._model_name = model_name
        self._max_model_len = max_model_len
        self.step_delay_s = step_delay_s
        self.fail_token: int | None = None
        self.fail_step = 0
        self.rows: dict[str, Row] = {}
        self.seen_cancelled: set[str] = set()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def vocab_size(self) -> int:
        return 256

    def encode_prompt(self, prompt: str) -> list[int]:
        return [ord(c) % 256 for c in prompt]

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if any(m["role"] == "tool" for m in messages):
            raise ValueError("this template has no tool role")  # as a real template may
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return self.encode_prompt(text)

    @staticmethod
    def token_text(prompt_len: int, step: int) -> str:
        """The fake's output: letters that depend on prompt length and step."""
        return chr(ord("a") + (prompt_len + step) % 26)

    def _step(self, row: Row, step: int, text: str) -> RowOutput:
        """The row's output for one decoding step."""
        if row.cancelled():
            self.seen_cancelled.add(row.request_id)
            return self._out(row, "", (), "stop", step)
        if step >= self.fail_step and self.fail_token in row.prompt_token_ids:
            out = self._out(row, "", (), "stop", step)
            return dataclasses.replace(out, error=f"row failure at step {step}")
        piece = self.token_text(len(row.prompt_token_ids), step)
        full = text + piece
        cuts = [full.find(s) for s in row.params.stop if s and s in full]
        if cuts:
            return self._out(row, full[: min(cuts)][len(text) :], (ord(piece),), "stop", step + 1)
        done = step + 1 >= row.params.max_tokens
        return self._out(row, piece, (ord(piece),), "length" if done else None, step + 1)

    @staticmethod
    def _out(
        row: Row, text: str, ids: tuple[int, ...], finish: FinishReason | None, n_completion: int
    ) -> RowOutput:
        return RowOutput(
            request_id=row.request_id,
            text=text,
            token_ids=ids,
            finish_reason=finish,
            prompt_tokens=len(row.prompt_token_ids),
            completion_tokens=n_completion,
        )


class FakeEngine(FakeModel):
    """Implements the (continuous) thread Engine protocol, one step for every live row at once.

    Tests control it through `hold` (cleared: every batch waits at its start until set),
    `step_delay_s` (time per decoding step), `fail_next` (the next batch raises) and
    FakeModel's `fail_token` / `fail_step`. Each batch's (or continuous admission's) request
    ids are recorded in `batches`.
    """

    def __init__(
        self, *, model_name: str = "fake-model", max_model_len: int = 64, step_delay_s: float = 0
    ) -> None:
        super().__init__(
            model_name=model_name, max_model_len=max_model_len, step_delay_s=step_delay_s
        )
        self.hold = threading.Event()
        self.hold.set()
        self.batch_started = threading.Event()
        self.fail_next: Exception | None = None
        self.batches: list[list[str]] = []
        self.pass_cost_s = 0.0  # what it tells admit a pass costs (0: unknown)

    def run_batch(self, rows: Sequence[Row], emit: Emit) -> None:
        pending = [list(rows)]

        def admit_once(free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
            return pending.pop() if pending else []

        self.run_continuous(admit_once, emit, max_rows=max(1, len(rows)))

    def run_continuous(self, admit: Admit, emit: Emit, *, max_rows: int) -> None:
        """One step per loop: admit newcomers into free slots, then advance every live row."""
        live: dict[str, tuple[Row, int, str]] = {}  # request id -> (row, steps done, text)
        while True:
            if len(live) < max_rows:
                free = max_rows - len(live)
                newcomers = list(admit(free, not live, pass_cost_s=self.pass_cost_s))
                if not newcomers and not live:
                    return
                if newcomers:
                    self._start(newcomers)
                for row in newcomers:
                    live[row.request_id] = (row, 0, "")
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
            for rid, (row, step, text) in list(live.items()):
                out = self._step(row, step, text)
                emit(out)
                if out.finish_reason is None:
                    live[rid] = (row, step + 1, text + out.text)
                else:
                    del live[rid]

    def _start(self, rows: Sequence[Row]) -> None:
        self.batches.append([r.request_id for r in rows])
        for row in rows:
            self.rows[row.request_id] = row
        self.batch_started.set()
        self.hold.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc


class FakeAsyncEngine(FakeModel):
    """Implements AsyncEngine: each row is a task on the caller's loop, one token per step.

    Writes FakeEngine's text for the same row. Tests control it through `gate` (an asyncio
    event; cleared: every row waits at its start until set), `step_delay_s`,
    `fail_token` / `fail_step` (that row ends with an error output at that step) and
    `raise_token` (that row raises at its start). It records `events` in order
    (("start" | "end" | "cancelled", request id)), `rows`, `seen_cancelled` and `max_live`
    (the most rows it served at once).
    """

    def __init__(self, *, step_delay_s: float = 0.001) -> None:
        super().__init__(step_delay_s=step_delay_s)
        self.gate = asyncio.Event()
        self.gate.set()
        self.raise_token: int | None = None
        self.events: list[tuple[str, str]] = []
        self.live: set[str] = set()
        self.max_live = 0

    def started(self) -> list[str]:
        return [rid for event, rid in self.events if event == "start"]

    async def stream_row(self, row: Row) -> AsyncIterator[RowOutput]:
        rid = row.request_id
        self.rows[rid] = row
        self.events.append(("start", rid))
        self.live.add(rid)
        self.max_live = max(self.max_live, len(self.live))
        try:
            await self.gate.wait()
            if self.raise_token in row.prompt_token_ids:
                raise RuntimeError("boom")
            step, text = 0, ""
            while True:
                # Every step yields to the loop, as a real engine's output queue does.
                await asyncio.sleep(self.step_delay_s)
                out = self._step(row, step, text)
                yield out
                if out.finish_reason is not None:
                    break
                step, text = step + 1, text + out.text
            self.events.append(("end", rid))
        except asyncio.CancelledError:
            self.seen_cancelled.add(rid)
            self.events.append(("cancelled", rid))
            raise
        finally:
            self.live.discard(rid)
