"""The one object the gateway talks to: exact then semantic lookup, store, operations.

CONTRACT (agreed between cache/ and gateway/; the cache work fills in the bodies).
`endpoint` is "chat" (body of /v1/chat/completions) or "completion" (/v1/completions);
`body` is the client's JSON request body as a dict (the cache decides which fields change
the answer); `response` is the full, non-streamed OpenAI JSON response, which the gateway
can replay as an SSE stream. No method raises because Redis is down or slow: lookups then
report a miss and stores are dropped (fail open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Endpoint = Literal["chat", "completion"]
Outcome = Literal["exact", "semantic", "miss", "bypass"]


@dataclass(frozen=True, kw_only=True)
class CacheHit:
    """A cached answer and how it was found."""

    kind: Literal["exact", "semantic"]
    entry_id: str
    response: dict[str, Any]
    similarity: float | None = None  # set on semantic hits


@dataclass(frozen=True, kw_only=True)
class EntryInfo:
    """One cached entry as the admin listing shows it (no answer text)."""

    entry_id: str
    namespace: str
    model: str
    question: str
    created_at: float
    hits: int
    ttl_s: int


class ResponseCache:
    """Async context manager: `async with ResponseCache(...) as cache:` rebuilds the vector
    index from Redis and follows other replicas' changes until exit."""

    async def __aenter__(self) -> ResponseCache:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        raise NotImplementedError

    async def lookup(
        self, namespace: str, endpoint: Endpoint, body: dict[str, Any], *, semantic: bool = True
    ) -> CacheHit | None:
        """Exact lookup, then (if `semantic`) semantic lookup within the request's scope."""
        raise NotImplementedError

    async def store(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        response: dict[str, Any],
        *,
        ttl_s: int | None = None,
    ) -> str | None:
        """Stores under the exact key and in the semantic index; returns the entry id."""
        raise NotImplementedError

    async def record(
        self, namespace: str, model: str, outcome: Outcome, *, latency_ms: float | None = None
    ) -> None:
        """Counts one request's outcome (and its latency) in the Redis stats."""
        raise NotImplementedError

    async def stats(self) -> dict[str, Any]:
        """Counters and latency p50/p99 for last minute, last hour and since start;
        overall, per namespace and per model."""
        raise NotImplementedError

    async def invalidate(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        entry_id: str | None = None,
    ) -> int:
        """Removes matching entries (all filters given must match); returns how many."""
        raise NotImplementedError

    async def entries(
        self, *, namespace: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[EntryInfo]:
        """A page of entries with their hit counts."""
        raise NotImplementedError

    async def ping(self) -> bool:
        """True when Redis answers now (for /ready)."""
        raise NotImplementedError
