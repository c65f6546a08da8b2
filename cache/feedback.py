"""Operator feedback on semantic hits: the log of recent hits, wrong-hit reports, refused pairs.

Layout (P = key prefix, N = namespace hash in braces, the namespace's Cluster hash tag):

    P:{N}:hits            stream  the namespace's recent semantic hits: the last `log_size`,
                                  none older than `log_ttl_s`
    P:{N}:wrong           hash    hit id -> that hit as JSON, reported wrong (labelled
                                  negatives for training; no TTL)
    P:{N}:refuse:<key h>  hash    digest of a normalised new question -> its vector (float32
                                  bytes; empty if it could not be embedded): questions that
                                  entry never serves again (no TTL; see EntryStore.refuse_key)

A hit id is `N.<stream id>`: like an entry id, it names its namespace and holds no user text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.embedder import Vector
from cache.redis_client import RedisClient

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(frozen=True, kw_only=True)
class SemanticHit:
    """One semantic hit as an operator reviews it: both questions, never the answer."""

    hit_id: str
    namespace: str
    model: str
    scope: str
    entry_id: str
    cached_question: str
    new_question: str
    similarity: float
    score: float | None = None  # the verifier's score of the pair (a logit)
    at: float
    wrong: bool = False
    reported_at: float | None = None


def normalise_question(text: str) -> str:
    """Case, punctuation and spacing dropped: a refusal must not hinge on a question mark."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def question_digest(text: str) -> str:
    """The refused-pair field of a question (no user text in Redis field names)."""
    return hashlib.sha256(normalise_question(text).encode()).hexdigest()[:32]


def refuses(
    refusals: Mapping[bytes, bytes],
    question: str,
    vector: Vector | None,
    *,
    min_similarity: float,
) -> bool:
    """Whether an entry's refused questions rule out serving `question`: the same normalised
    text, or a vector within `min_similarity` of one reported wrong."""
    if not refusals:
        return False
    if question_digest(question).encode() in refusals:
        return True
    if vector is None:
        return False
    for raw in refusals.values():
        refused = np.frombuffer(raw, dtype=np.float32)
        if refused.shape == vector.shape and float(refused @ vector) >= min_similarity:
            return True
    return False


def split_hit_id(hit_id: str) -> tuple[str, str] | None:
    """(namespace hash, stream id) of a well-formed hit id."""
    nsh, dot, stream_id = hit_id.partition(".")
    if not dot or not nsh.isalnum() or not _STREAM_ID.fullmatch(stream_id):
        return None
    return nsh, stream_id


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _hit(nsh: str, stream_id: bytes | str, fields: Mapping[bytes, bytes]) -> SemanticHit:
    sid = _s(stream_id)
    score = _s(fields.get(b"score"))
    return SemanticHit(
        hit_id=f"{nsh}.{sid}",
        namespace=_s(fields.get(b"namespace")),
        model=_s(fields.get(b"model")),
        scope=_s(fields.get(b"scope")),
        entry_id=_s(fields.get(b"entry_id")),
        cached_question=_s(fields.get(b"cached_question")),
        new_question=_s(fields.get(b"new_question")),
        similarity=float(_s(fields.get(b"similarity")) or 0.0),
        score=float(score) if score else None,
        at=int(sid.split("-")[0]) / 1000.0,
    )


def _newest_first(hit: SemanticHit) -> tuple[int, int]:
    ms, seq = hit.hit_id.partition(".")[2].split("-")
    return int(ms), int(seq)


class FeedbackStore:
    """Keeps the recent-hit log and the reports; every method is one or two round trips."""

    def __init__(self, redis: RedisClient, *, prefix: str, log_size: int, log_ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.log_size = log_size
        self.log_ttl_s = log_ttl_s

    def hits_key(self, nsh: str) -> str:
        return f"{self.prefix}:{{{nsh}}}:hits"

    def wrong_key(self, nsh: str) -> str:
        return f"{self.prefix}:{{{nsh}}}:wrong"

    async def log_hit(self, nsh: str, hit: Mapping[str, str | float | None]) -> None:
        """Appends one hit (fields of SemanticHit without id and time), trimming the log."""
        if self.log_size <= 0:
            return
        key = self.hits_key(nsh)
        fields = {k: str(v) for k, v in hit.items() if v is not None}
        oldest_ms = int((time.time() - self.log_ttl_s) * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=self.log_size, approximate=False)  # type: ignore[arg-type]
        pipe.xtrim(key, minid=f"{oldest_ms}-0", approximate=False)
        pipe.expire(key, self.log_ttl_s)
        await pipe.execute()

    async def hits(self, nshs: Sequence[str], *, limit: int) -> list[SemanticHit]:
        """The newest `limit` hits of these namespaces, each marked if it was reported wrong."""
        pipe = self.redis.pipeline(transaction=False)
        for nsh in nshs:
            pipe.xrevrange(self.hits_key(nsh), "+", "-", count=limit)
        found = [
            _hit(nsh, sid, fields)
            for nsh, rows in zip(nshs, await pipe.execute(), strict=True)
            for sid, fields in rows
        ]
        found = sorted(found, key=_newest_first, reverse=True)[:limit]
        return await self._with_reports(found)

    async def hit(self, hit_id: str) -> SemanticHit | None:
        """One logged hit, or None when the id is malformed or has left the log."""
        parts = split_hit_id(hit_id)
        if parts is None:
            return None
        nsh, sid = parts
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
            self.hits_key(nsh), min=sid, max=sid, count=1
        )  # type: ignore[assignment]
        if not rows:
            return None
        return (await self._with_reports([_hit(nsh, *rows[0])]))[0]

    async def _with_reports(self, hits: list[SemanticHit]) -> list[SemanticHit]:
        if not hits:
            return hits
        pipe = self.redis.pipeline(transaction=False)
        for hit in hits:
            pipe.hget(self.wrong_key(hit.hit_id.partition(".")[0]), hit.hit_id)
        out = []
        for hit, raw in zip(hits, await pipe.execute(), strict=True):
            if raw is not None:
                reported = json.loads(raw).get("reported_at")
                hit = dataclasses.replace(hit, wrong=True, reported_at=reported)
            out.append(hit)
        return out

    async def report(self, hit: SemanticHit, vector: Vector | None, *, refuse_key: str) -> bool:
        """Refuses the pair from now on and keeps it as a labelled negative; True the first
        time this hit is reported (so a repeated report is not counted twice)."""
        nsh = hit.hit_id.partition(".")[0]
        labelled = dataclasses.replace(hit, wrong=True, reported_at=time.time())
        field = question_digest(hit.new_question)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(self.wrong_key(nsh), hit.hit_id, json.dumps(dataclasses.asdict(labelled)))
        if vector is None:
            pipe.hsetnx(refuse_key, field, b"")  # keeps a vector an earlier report stored
        else:
            pipe.hset(refuse_key, field, np.asarray(vector, dtype=np.float32).tobytes())
        first, _ = await pipe.execute()
        return bool(first)

    async def negatives(self, nshs: Sequence[str], *, limit: int) -> list[SemanticHit]:
        """Hits reported wrong, most recently reported first."""
        pipe = self.redis.pipeline(transaction=False)
        for nsh in nshs:
            pipe.hvals(self.wrong_key(nsh))
        records: list[dict[str, Any]] = [
            json.loads(raw) for values in await pipe.execute() for raw in values
        ]
        records.sort(key=lambda r: r.get("reported_at") or 0.0, reverse=True)
        return [SemanticHit(**r) for r in records[:limit]]
