"""The contract between the batcher and the engines that run a model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeGuard

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Per-request decoding settings; every row of a batch carries its own."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0


@dataclass(kw_only=True)
class Row:
    """One request inside a batch.

    `cancelled` is polled between decoding steps by the thread engines (`Engine`); an
    `AsyncEngine`'s row is cancelled through its task instead.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    cancelled: Callable[[], bool] = field(default=lambda: False)


@dataclass(frozen=True, kw_only=True)
class RowOutput:
    """What one decoding step produced for one row.

    `text` is the new text since the previous output of this row (stop strings already
    cut away); `finish_reason` is set on the row's last output, which carries the final
    token counts. `error` set means this row failed on its own (its batch mates go on):
    that output is the row's last, whatever its `finish_reason`, and the request gets an
    error instead of a completion.
    """

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Emit = Callable[[RowOutput], None]


class ServedModel(Protocol):
    """What the HTTP layer needs from any engine: the model's name, limits and tokenizer."""

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int:
        """Prompt token ids must lie in [0, vocab_size); the HTTP layer refuses others."""
        ...

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Applies the tokenizer's chat template, with the generation prompt appended."""
        ...


class Engine(ServedModel, Protocol):
    """A loaded model that serves a whole batch of rows with one forward pass per step."""

    def run_batch(self, rows: Sequence[Row], emit: Emit) -> None:
        """Generates every row to completion, emitting outputs as they are produced.

        Blocking: the batcher calls it in a worker thread. Every row gets exactly one
        output with `finish_reason` set (a cancelled row finishes with "stop" early). A row
        that cannot run or fails on its own gets a last output with `error` set instead.
        Raising means every row of the batch failed.
        """
        ...


class Admit(Protocol):
    """Hands an engine new rows between decoding steps (continuous batching)."""

    def __call__(self, free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
        """Returns at most `free` queued rows.

        With `idle` False rows are still generating: return at once (possibly nothing, also
        to let more newcomers gather for one shared prefill pass). With `idle` True nothing
        is generating: may block until a row arrives; returning nothing then ends the
        engine's run. `pass_cost_s` is the engine's estimate of one forward pass's fixed
        cost (0: unknown), which admitting newcomers adds to every running row's wait.
        """
        ...


class ContinuousEngine(Engine, Protocol):
    """An engine whose rows can join and leave the running batch between decoding steps."""

    def run_continuous(self, admit: Admit, emit: Emit, *, max_rows: int) -> None:
        """Decodes until idle and `admit` returns nothing, never holding more than `max_rows`.

        Blocking, like run_batch. Each step: cancelled rows finish ("stop"), `admit` is asked
        for up to the free rows (newcomers are prefilled and join), then one forward pass
        advances every live row; finished rows are released at once. Every admitted row
        gets exactly one output with `finish_reason` set (or `error`, for a row that fails on
        its own). Raising means every admitted, unfinished row failed.
        """
        ...


class AsyncEngine(ServedModel, Protocol):
    """An engine that schedules rows itself and serves each on the caller's event loop.

    vLLM's async engine is one: the batcher starts one task per row on its own loop (the
    HTTP server's) and the engine batches whatever rows are live at each of its steps, so no
    thread sits between the two. The engine is bound to the first event loop it serves.
    """

    def stream_row(self, row: Row) -> AsyncIterator[RowOutput]:
        """Generates one row, yielding its outputs as they are produced.

        The last output has `finish_reason` set, or `error` for a row that failed on its
        own. Cancelling the task that iterates stops the row in the engine (the batcher
        does that when the client leaves or the deadline passes). Raising fails this row
        only.
        """
        ...


AnyEngine = Engine | AsyncEngine


def is_async_engine(engine: AnyEngine) -> TypeGuard[AsyncEngine]:
    """True for engines that serve rows as tasks on the event loop (`stream_row`)."""
    return callable(getattr(engine, "stream_row", None))
