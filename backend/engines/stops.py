"""Stop strings that may span token boundaries: hold back text until it cannot start a stop."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Decides how much of a row's growing text is safe to emit, and where a stop string cuts it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text = ""
        self._emitted = 0

    @property
    def text(self) -> str:
        """Everything emitted so far (the final completion text once the row ends)."""
        return self._text[: self._emitted]

    def feed(self, delta: str, *, detect: bool = True) -> tuple[str, bool]:
        """Adds new text; returns (text safe to emit now, whether a stop string was found)."""
        self._text += delta
        if not self._stops or not detect:
            return self._release(len(self._text)), False
        cut = self._find_stop()
        if cut is not None:
            return self._release(cut), True
        return self._release(len(self._text) - self._held_back()), False

    def flush(self) -> str:
        """Releases any held-back text (the row ends without a stop string)."""
        return self._release(len(self._text))

    def _find_stop(self) -> int | None:
        # Held-back text covers every partial match, so a stop cannot begin before `_emitted`.
        found = [i for s in self._stops if (i := self._text.find(s, self._emitted)) >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        pending = len(self._text) - self._emitted
        for k in range(min(self._longest - 1, pending), 0, -1):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0

    def _release(self, end: int) -> str:
        out = self._text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out
