"""Entries in Redis: layout, TTL, per-namespace LRU bound, hit counts.

Layout (P = key prefix, N = namespace hash; `{N}` is a Cluster hash tag, so all of a
namespace's keys share one slot and its pipelines stay on one node):

    P:{N}:e:<key hash>   hash    namespace, model, endpoint, question, response (JSON),
                                 created, ttl, expires, hits, scope, vec (float32 bytes)
    P:{N}:lru            zset    entry id -> last access time (eviction order)
    P:{N}:exp            zset    entry id -> expiry time (to forget entries Redis expired)
    P:namespaces         hash    N -> namespace name (for listings and invalidation)
    P:{N}:refuse:<kh>    hash    questions the entry must not serve (cache/feedback.py)

An entry id is `N.<key hash>`: it names its namespace and its exact key, no user text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cache.embedder import Vector
from cache.redis_client import RedisClient

CHUNK = 500


@dataclass(frozen=True, kw_only=True)
class NewEntry:
    """Everything stored for one answer."""

    namespace: str
    namespace_hash: str
    key_hash: str
    model: str
    endpoint: str
    question: str
    response: dict[str, Any]
    ttl_s: int
    scope: str | None = None
    vector: Vector | None = None

    @property
    def entry_id(self) -> str:
        return f"{self.namespace_hash}.{self.key_hash}"


@dataclass(frozen=True, kw_only=True)
class IndexRow:
    """What the vector index needs of an entry."""

    entry_id: str
    scope: str
    vector: Vector
    expires_at: float


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A semantic candidate as read back from Redis."""

    entry_id: str
    question: str
    raw_response: bytes | str  # JSON, parsed only for the candidate the guard lets through
    refusals: dict[bytes, bytes] = field(default_factory=dict)  # questions reported wrong

    def response(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw_response)
        return parsed


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def split_id(entry_id: str) -> tuple[str, str] | None:
    """(namespace hash, key hash) of a well-formed entry id."""
    nsh, dot, kh = entry_id.partition(".")
    if not dot or not nsh.isalnum() or not kh.isalnum():
        return None
    return nsh, kh


class EntryStore:
    """Reads and writes entries; every method is one or two Redis round trips."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def entry_key(self, nsh: str, kh: str) -> str:
        return f"{self.prefix}:{{{nsh}}}:e:{kh}"

    def key_of(self, entry_id: str) -> str | None:
        parts = split_id(entry_id)
        return self.entry_key(*parts) if parts else None

    def lru_key(self, nsh: str) -> str:
        return f"{self.prefix}:{{{nsh}}}:lru"

    def exp_key(self, nsh: str) -> str:
        return f"{self.prefix}:{{{nsh}}}:exp"

    def refuse_key(self, nsh: str, kh: str) -> str:
        """Kept per entry, not per scope: an entry id fixes its scope, and a refusal must
        outlive the entry (a re-stored answer under the same id is the same mistake)."""
        return f"{self.prefix}:{{{nsh}}}:refuse:{kh}"

    @property
    def namespaces_key(self) -> str:
        return f"{self.prefix}:namespaces"

    async def get_response(self, nsh: str, kh: str) -> dict[str, Any] | None:
        """The stored response under an exact key, if any."""
        raw = await self.redis.hget(self.entry_key(nsh, kh), "response")  # type: ignore[misc]
        return json.loads(raw) if raw else None

    async def touch(self, entry_id: str) -> None:
        """Counts a hit and moves the entry to the fresh end of its namespace's LRU order."""
        parts = split_id(entry_id)
        if parts is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.entry_key(*parts), "hits", 1)
        pipe.zadd(self.lru_key(parts[0]), {entry_id: time.time()}, xx=True)
        await pipe.execute()

    async def answer_and_refusals(
        self, entry_id: str
    ) -> tuple[dict[str, Any] | None, dict[bytes, bytes]]:
        """A semantic candidate's answer (None: gone) and refused questions, one round trip."""
        parts = split_id(entry_id)
        if parts is None:
            return None, {}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.entry_key(*parts), "response")
        pipe.hgetall(self.refuse_key(*parts))
        raw, refusals = await pipe.execute()
        return (json.loads(raw) if raw else None), refusals

    async def candidates(self, entry_ids: Sequence[str]) -> list[Candidate | None]:
        """Question, response and refused questions of each candidate (None where the entry
        is gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            parts = split_id(entry_id)
            pipe.hmget(self.entry_key(*parts) if parts else "", ["question", "response"])
            pipe.hgetall(self.refuse_key(*parts) if parts else "")
        result = await pipe.execute()
        out: list[Candidate | None] = []
        for entry_id, (question, response), refusals in zip(
            entry_ids, result[0::2], result[1::2], strict=True
        ):
            if response is None:
                out.append(None)
            else:
                out.append(
                    Candidate(
                        entry_id=entry_id,
                        question=_s(question),
                        raw_response=response,
                        refusals=refusals,
                    )
                )
        return out

    async def put(self, entry: NewEntry, *, max_entries: int) -> tuple[float, list[str]]:
        """Writes the entry; returns its expiry time and the ids that left (LRU or expired)."""
        now = time.time()
        expires = now + entry.ttl_s
        nsh, entry_id = entry.namespace_hash, entry.entry_id
        key, lru, exp = self.entry_key(nsh, entry.key_hash), self.lru_key(nsh), self.exp_key(nsh)
        fields: dict[str | bytes, Any] = {
            "namespace": entry.namespace,
            "model": entry.model,
            "endpoint": entry.endpoint,
            "question": entry.question,
            "response": json.dumps(entry.response, separators=(",", ":")),
            "created": repr(now),
            "ttl": entry.ttl_s,
            "expires": repr(expires),
            "hits": 0,
        }
        if entry.scope is not None and entry.vector is not None:
            fields["scope"] = entry.scope
            fields["vec"] = np.asarray(entry.vector, dtype=np.float32).tobytes()
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(key)  # a re-store replaces the entry whole (old scope/vec must not linger)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, entry.ttl_s)
        pipe.zadd(lru, {entry_id: now})
        pipe.zadd(exp, {entry_id: expires})
        pipe.zrangebyscore(exp, "-inf", now)
        pipe.zcard(lru)
        pipe.hset(self.namespaces_key, nsh, entry.namespace)
        result = await pipe.execute()
        expired = [_s(m) for m in result[5]]
        gone = list(expired)
        if expired:
            await self._forget(nsh, expired)
        over = int(result[6]) - len(expired) - max_entries
        if over > 0:
            popped: list[tuple[bytes, float]] = await self.redis.zpopmin(lru, over)  # type: ignore[assignment]
            evicted = [_s(m) for m, _ in popped]
            await self.delete(evicted)
            gone += evicted
        return expires, gone

    async def _forget(self, nsh: str, ids: Sequence[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.lru_key(nsh), *ids)
        pipe.zrem(self.exp_key(nsh), *ids)
        await pipe.execute()

    async def delete(self, entry_ids: Iterable[str]) -> int:
        """Deletes entries; returns how many existed."""
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for entry_id in entry_ids:
            parts = split_id(entry_id)
            if parts is None:
                continue
            pipe.delete(self.entry_key(*parts))
            pipe.zrem(self.lru_key(parts[0]), entry_id)
            pipe.zrem(self.exp_key(parts[0]), entry_id)
            count += 1
        if not count:
            return 0
        result = await pipe.execute()
        return sum(int(r) for r in result[0::3])

    async def namespaces(self) -> dict[str, str]:
        """Namespace hash -> namespace name, for every namespace ever stored into."""
        raw = await self.redis.hgetall(self.namespaces_key)  # type: ignore[misc]
        return {_s(k): _s(v) for k, v in raw.items()}

    async def ids(self, nsh: str, *, start: int = 0, stop: int = -1) -> list[str]:
        """Entry ids of a namespace, most recently used first."""
        members: list[bytes] = await self.redis.zrevrange(self.lru_key(nsh), start, stop)  # type: ignore[assignment]
        return [_s(m) for m in members]

    async def count(self, nsh: str) -> int:
        return int(await self.redis.zcard(self.lru_key(nsh)))

    async def fields(
        self, entry_ids: Sequence[str], names: Sequence[str]
    ) -> list[list[bytes | None]]:
        """The named fields of each entry (all None where it is gone), chunked pipelines."""
        out: list[list[bytes | None]] = []
        for i in range(0, len(entry_ids), CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in entry_ids[i : i + CHUNK]:
                pipe.hmget(self.key_of(entry_id) or "", list(names))
            out.extend(await pipe.execute())
        return out

    async def index_rows(self, nsh: str) -> list[IndexRow]:
        """The semantic part of every live entry in a namespace (to rebuild an index)."""
        ids = await self.ids(nsh)
        rows = []
        for entry_id, (scope, vec, expires) in zip(
            ids, await self.fields(ids, ["scope", "vec", "expires"]), strict=True
        ):
            if scope and vec and expires:
                rows.append(
                    IndexRow(
                        entry_id=entry_id,
                        scope=_s(scope),
                        vector=np.frombuffer(vec, dtype=np.float32),
                        expires_at=float(expires),
                    )
                )
        return rows
