"""A fake engine for backend tests: deterministic text, gated by threading events."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from backend.engines.base import Emit, FinishReason, Row, RowOutput


class FakeEngine:
    """Implements the Engine protocol: one character per token, one step per token.

    Tests control it through `hold` (cleared: every batch waits at its start until set),
    `step_delay_s` (time per decoding step), and `fail_next` (the next batch raises).
    Each batch's request ids are recorded in `batches`, its rows in `rows`.
    """

    def __init__(
        self, *, model_name: str = "fake-model", max_model_len: int = 64, step_delay_s: float = 0
    ) -> None:
        self._model_name = model_name
        self._max_model_len = max_model_len
        self.step_delay_s = step_delay_s
        self.hold = threading.Event()
        self.hold.set()
        self.batch_started = threading.Event()
        self.fail_next: Exception | None = None
        self.batches: list[list[str]] = []
        self.rows: dict[str, Row] = {}
        self.seen_cancelled: set[str] = set()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def encode_prompt(self, prompt: str) -> list[int]:
        return [ord(c) % 256 for c in prompt]

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return self.encode_prompt(text)

    @staticmethod
    def token_text(prompt_len: int, step: int) -> str:
        """The fake's output: letters that depend on prompt length and step."""
        return chr(ord("a") + (prompt_len + step) % 26)

    def run_batch(self, rows: Sequence[Row], emit: Emit) -> None:
        self.batches.append([r.request_id for r in rows])
        for row in rows:
            self.rows[row.request_id] = row
        self.batch_started.set()
        self.hold.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        texts = {r.request_id: "" for r in rows}
        active = list(rows)
        step = 0
        while active:
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
            still: list[Row] = []
            for row in active:
                n_prompt = len(row.prompt_token_ids)
                if row.cancelled():
                    self.seen_cancelled.add(row.request_id)
                    emit(self._out(row, "", (), "stop", step))
                    continue
                piece = self.token_text(n_prompt, step)
                text = texts[row.request_id] + piece
                cut = [text.find(s) for s in row.params.stop if s and s in text]
                if cut:
                    new = text[: min(cut)][len(texts[row.request_id]) :]
                    emit(self._out(row, new, (ord(piece),), "stop", step + 1))
                    continue
                texts[row.request_id] = text
                done = step + 1 >= row.params.max_tokens
                emit(self._out(row, piece, (ord(piece),), "length" if done else None, step + 1))
                if not done:
                    still.append(row)
            active = still
            step += 1

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
