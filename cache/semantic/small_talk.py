"""Which earlier exchanges of a conversation are small talk, so the semantic scope can skip them.

The semantic scope covers every message before the question: two conversations share
answers only when their histories match. A "hi there!" / "Hello! How can I help?" exchange,
or a "thanks a lot!" / "You're welcome!", changes no answer, yet it put the question in a
scope of its own. A small model reads each user turn with the assistant's reply and says
whether the exchange carries anything a later answer could depend on: a logistic regression
over the embedder's vector of the exchange, trained on labelled exchanges
(cache/semantic/corpus/small_talk.jsonl) with the verifier, and calibrated so that at least
MIN_PRECISION of what it calls small talk is (train_small_talk.py).

Leaving an informative turn out could serve a wrong answer, so everything fails towards
keeping: a turn in a language without a semantic path, with anything but text (tool calls,
images, names), or scored below the calibrated threshold stays in the scope.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache.embedder import Embedder
from cache.keys import digest
from cache.semantic.language import Gate

SMALL_TALK_FILE = "small_talk.json"
# Exchanges come back with every later turn of their conversation: remember the verdicts.
RECENT_EXCHANGES = 4096


def exchange_text(user: str, assistant: str) -> str:
    """What the model reads of one exchange (the same in training and in the cache)."""
    return f"{user.strip()}\n{assistant.strip()}"


@dataclass(frozen=True)
class SmallTalkModel:
    """Logistic regression over an exchange's embedding, with its calibrated threshold."""

    weights: np.ndarray
    bias: float
    threshold: float
    languages: tuple[str, ...]
    dev: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> SmallTalkModel | None:
        """The model trained beside the verifier in `folder`, or None if it has none."""
        path = folder / SMALL_TALK_FILE
        if not path.is_file():
            return None
        meta = json.loads(path.read_text())
        return cls(
            weights=np.asarray(meta["weights"], dtype=np.float32),
            bias=float(meta["bias"]),
            threshold=float(meta["threshold"]),
            languages=tuple(meta["languages"]),
            dev=dict(meta.get("dev", {})),
        )

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = np.asarray(vectors, dtype=np.float32) @ self.weights + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))


def _plain_text(message: Any, role: str) -> str | None:
    """The message's text if it is a plain text message of this role, else None."""
    if not isinstance(message, dict) or message.get("role") != role:
        return None
    if set(message) - {"role", "content"}:
        return None  # tool calls, names, refusals: never skipped
    content = message.get("content")
    return content if isinstance(content, str) and content.strip() else None


class SmallTalkFilter:
    """Finds the small-talk exchanges in a conversation's history."""

    def __init__(self, model: SmallTalkModel, embedder: Embedder, gate: Gate) -> None:
        self.model = model
        self.embedder = embedder
        self.gate = gate
        self._recent: OrderedDict[str, bool] = OrderedDict()

    async def skipped(self, history: Sequence[Any]) -> frozenset[int]:
        """Indices of history messages the scope may leave out: each small-talk exchange's
        user turn and the assistant reply right after it."""
        exchanges: dict[int, str] = {}
        i = 0
        while i < len(history) - 1:
            user = _plain_text(history[i], "user")
            reply = _plain_text(history[i + 1], "assistant")
            if user is not None and reply is not None:
                exchanges[i] = exchange_text(user, reply)
                i += 2
            else:
                i += 1
        # Judged together: the embedder batches the exchanges it has not seen in one call.
        verdicts = await asyncio.gather(*(self._is_small_talk(t) for t in exchanges.values()))
        out: set[int] = set()
        for i, small_talk in zip(exchanges, verdicts, strict=True):
            if small_talk:
                out.update((i, i + 1))
        return frozenset(out)

    async def _is_small_talk(self, text: str) -> bool:
        key = digest(["small-talk", text])
        known = self._recent.get(key)
        if known is not None:
            self._recent.move_to_end(key)
            return known
        verdict = await self._judge(text)
        self._recent[key] = verdict
        if len(self._recent) > RECENT_EXCHANGES:
            self._recent.popitem(last=False)
        return verdict

    async def _judge(self, text: str) -> bool:
        route = self.gate.route(text)
        if route.path is None or route.language not in self.model.languages:
            return False
        vector = await self.embedder.embed(text)
        probability = float(self.model.probabilities(np.asarray(vector)[None, :])[0])
        return probability >= self.model.threshold


def load_small_talk(cache_dir: Path | None = None) -> SmallTalkModel | None:
    """The small-talk model trained with the verifier in `cache_dir` (trained first, like
    the verifier, when this machine has none for the current corpus and code)."""
    from cache.semantic.train_verifier import ensure_trained
    from cache.semantic.verifier import default_cache_dir

    return SmallTalkModel.read(ensure_trained(cache_dir or default_cache_dir()))
