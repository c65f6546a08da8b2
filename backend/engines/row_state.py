"""One live row's bookkeeping between decoding steps: counts, text, stop and finish rules."""

from __future__ import annotations

import torch

from backend.engines.base import FinishReason, Row, RowOutput
from backend.engines.detokenize import Decoder, IncrementalDetokenizer
from backend.engines.sampling import row_generator
from backend.engines.stops import StopScanner


class RowState:
    """Turns the tokens chosen for a row into its RowOutputs, and says when it is done."""

    def __init__(
        self, row: Row, *, tokenizer: Decoder, eos_ids: frozenset[int], device: torch.device
    ) -> None:
        self.row = row
        self.params = row.params
        self.generator = row_generator(row.params, device)
        self.finished = False
        self._eos_ids = eos_ids
        self._detok = IncrementalDetokenizer(tokenizer, row.prompt_token_ids)
        self._stops = StopScanner(row.params.stop)
        self._generated = 0
        self._pending: list[int] = []

    @property
    def suppress_eos(self) -> bool:
        """EOS may not be chosen yet (min_tokens not reached)."""
        return self._generated < self.params.min_tokens

    def push(self, token_id: int) -> RowOutput | None:
        """Takes the row's next token; returns what to emit now, if anything."""
        self._generated += 1
        self._pending.append(token_id)
        p = self.params
        if token_id in self._eos_ids and not p.ignore_eos:
            return self._finish("stop", self._drain()[0])
        detect = self._generated >= p.min_tokens
        text, stopped = self._stops.feed(self._detok.push(token_id), detect=detect)
        if stopped:
            return self._finish("stop", text)
        if self._generated >= p.max_tokens:
            tail, stopped = self._drain()
            return self._finish("stop" if stopped else "length", text + tail)
        if not text:
            return None
        return self._output(text, None)

    def _drain(self) -> tuple[str, bool]:
        """Releases everything still held at the end of the row (a stop may still cut it)."""
        detect = self._generated >= self.params.min_tokens
        text, stopped = self._stops.feed(self._detok.flush(), detect=detect)
        return (text, True) if stopped else (text + self._stops.flush(), False)

    def cancel(self) -> RowOutput:
        """Ends the row early because its client went away."""
        return self._finish("stop", "")

    def _finish(self, reason: FinishReason, text: str) -> RowOutput:
        self.finished = True
        return self._output(text, reason)

    def _output(self, text: str, reason: FinishReason | None) -> RowOutput:
        ids, self._pending = tuple(self._pending), []
        return RowOutput(
            request_id=self.row.request_id,
            text=text,
            token_ids=ids,
            finish_reason=reason,
            prompt_tokens=len(self.row.prompt_token_ids),
            completion_tokens=self._generated,
        )
