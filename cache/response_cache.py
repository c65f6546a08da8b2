"""The one object the gateway talks to: exact then semantic lookup, store, operations.

CONTRACT (agreed between cache/ and gateway/; the cache work fills in the bodies).
`endpoint` is "chat" (body of /v1/chat/completions) or "completion" (/v1/completions);
`body` is the client's JSON request body as a dict (the cache decides which fields change
the answer); `response` is the full, non-streamed OpenAI JSON response, which the gateway
can replay as an SSE stream. No method raises because Redis is down or slow: lookups then
report a miss, stores are dropped and admin reads come back empty (fail open); only
`mark_wrong`, a write the operator must know did not happen, raises RedisUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal

from cache.embedder import Embedder, Vector
from cache.entries import Candidate, EntryStore, IndexRow, NewEntry, split_id
from cache.errors import ConfigError, RedisUnavailable
from cache.failopen import OUTAGE_ERRORS, FailOpen
from cache.feedback import FeedbackStore, SemanticHit, refuses
from cache.identity import Endpoint as Endpoint  # where callers have always found it
from cache.identity import RequestIdentity, identify, question_text
from cache.keys import namespace_hash
from cache.redis_client import RedisClient, connect_redis
from cache.scope import SemanticQuery, scope_of
from cache.semantic.language import Gate, english_gate
from cache.semantic.small_talk import SmallTalkFilter, SmallTalkModel
from cache.semantic.verifier import Verdict, Verifier, load_verifier
from cache.stats import StatsStore
from cache.sync import ReplicaSync
from cache.vector_index import Neighbour, ScopedIndex, VectorIndex

RECENT_VECTORS = 256
# Questions of entries seen as semantic candidates, by entry id: the id is a hash of the
# request, question included, so the pair never goes stale (an entry that left Redis is
# noticed when its answer is read).
RECENT_QUESTIONS = 8192
ENTRY_INFO_FIELDS = ("namespace", "model", "question", "created", "hits", "expires")
# A question this close to one reported wrong for an entry is refused by that entry too.
REFUSAL_SIMILARITY = 0.95


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


@dataclass(frozen=True, kw_only=True)
class _Asked:
    """A semantic lookup's question, as the hit log and the refused pairs need it."""

    namespace: str
    model: str
    query: SemanticQuery
    vector: Vector


class ResponseCache:
    """Async context manager: `async with ResponseCache(...) as cache:` rebuilds the vector
    index from Redis and follows other replicas' changes until exit.

    Parameters:
        redis: a redis.asyncio client (see `connect_redis`); None starts an in-process
            fakeredis server, owned and closed by the cache.
        embedder: turns questions into unit vectors (e.g. `MicroBatchEmbedder`); if it is an
            async context manager the cache enters and exits it. None turns semantic off.
        key_prefix: prefix of every Redis key, so several deployments can share one Redis.
        default_ttl_s: lifetime of an entry unless `store(ttl_s=...)` says otherwise.
        max_entries_per_namespace: LRU bound; the least recently used entries leave first.
        similarity_threshold: minimum cosine similarity for a semantic candidate (None: the
            one the verifier was calibrated with).
        semantic_enabled: False keeps only the exact cache (no embedding at all).
        op_timeout_s: time limit of each Redis operation on the request path.
        verifier: decides whether a candidate's answer fits the new question (None: the
            trained verifier, cache/semantic/verifier.py, trained on first use if need be);
            if it is an async context manager the cache enters and exits it.
        index: the vector index (None: exact search partitioned by scope).
        max_candidates: nearest neighbours offered to the verifier, best first.
        sync_interval_s: how often the replica-sync stream is polled.
        probe_interval_s: during an outage, how often a request may try Redis again.
        embed_timeout_s: a semantic lookup waiting longer than this for its embedding misses.
        admin_timeout_s: time limit of admin operations (invalidate, entries, stats).
        language_gate: decides which questions may be matched by meaning at all (None: English
            only, read by all-MiniLM-L6-v2's tokenizer); others get exact caching only.
        hit_log_size: semantic hits kept per namespace for operators to review (0: none).
        hit_log_ttl_s: how long a logged hit (both questions' text) is kept.
        refusal_similarity: a question at least this similar to one reported wrong for an
            entry is not served by that entry either.
        small_talk: the model that finds small talk in a conversation's history, left out of
            the semantic scope (None: every earlier message is part of the scope).
    """

    def __init__(
        self,
        redis: RedisClient | None = None,
        *,
        embedder: Embedder | None = None,
        key_prefix: str = "sluice",
        default_ttl_s: int = 86_400,
        max_entries_per_namespace: int = 100_000,
        similarity_threshold: float | None = None,
        semantic_enabled: bool = True,
        op_timeout_s: float = 0.05,
        verifier: Verifier | None = None,
        index: VectorIndex | None = None,
        max_candidates: int = 4,
        sync_interval_s: float = 0.2,
        probe_interval_s: float = 0.5,
        embed_timeout_s: float = 1.0,
        admin_timeout_s: float = 5.0,
        language_gate: Gate | None = None,
        hit_log_size: int = 1000,
        hit_log_ttl_s: int = 7 * 86_400,
        refusal_similarity: float = REFUSAL_SIMILARITY,
        small_talk: SmallTalkModel | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if default_ttl_s <= 0 or max_entries_per_namespace <= 0:
            raise ConfigError("default_ttl_s and max_entries_per_namespace must be positive")
        self._owns_redis = redis is None
        self.redis: RedisClient = redis if redis is not None else connect_redis(None)
        self.embedder = embedder
        self.key_prefix = key_prefix
        self.default_ttl_s = default_ttl_s
        self.max_entries_per_namespace = max_entries_per_namespace
        self.semantic_enabled = semantic_enabled and embedder is not None
        if verifier is None and self.semantic_enabled:
            verifier = load_verifier()
        self.verifier = verifier
        calibrated = verifier.similarity_threshold if verifier is not None else 1.0
        self.similarity_threshold = (
            calibrated if similarity_threshold is None else similarity_threshold
        )
        self.language_gate = (
            language_gate if language_gate or not self.semantic_enabled else english_gate()
        )
        self.small_talk = (
            SmallTalkFilter(small_talk, embedder, self.language_gate)
            if small_talk is not None and embedder is not None and self.language_gate is not None
            else None
        )
        self.max_candidates = max_candidates
        self.embed_timeout_s = embed_timeout_s
        self.admin_timeout_s = admin_timeout_s
        self.logger = logger or logging.getLogger("sluice.cache")
        self.failopen = FailOpen(
            timeout_s=op_timeout_s, probe_interval_s=probe_interval_s, logger=self.logger
        )
        self.entries_store = EntryStore(self.redis, prefix=key_prefix)
        self.stats_store = StatsStore(self.redis, prefix=key_prefix)
        self.feedback = FeedbackStore(
            self.redis, prefix=key_prefix, log_size=hit_log_size, log_ttl_s=hit_log_ttl_s
        )
        self.refusal_similarity = refusal_similarity
        dim = embedder.dim if embedder is not None else 1
        self.index: VectorIndex = index if index is not None else ScopedIndex(dim)
        self.sync = ReplicaSync(
            self.redis,
            prefix=key_prefix,
            store=self.entries_store,
            index=self.index,
            failopen=self.failopen,
            origin=uuid.uuid4().hex,
            interval_s=sync_interval_s,
            logger=self.logger,
        )
        self._stack: contextlib.AsyncExitStack | None = None
        # Strong references: hit bookkeeping runs after the answer is returned.
        self._background: set[asyncio.Task[None]] = set()
        self._recent_vectors: OrderedDict[str, Vector] = OrderedDict()
        self._questions: dict[str, str] = {}

    async def __aenter__(self) -> ResponseCache:
        if self._stack is not None:
            raise RuntimeError("ResponseCache is already open")
        stack = contextlib.AsyncExitStack()
        if self.semantic_enabled:
            # The embedder and the verifier batch concurrent lookups in a worker of their own.
            for part in (self.embedder, self.verifier):
                if isinstance(part, contextlib.AbstractAsyncContextManager):
                    await stack.enter_async_context(part)
        if self.semantic_enabled:
            await self.sync.start()
            stack.push_async_callback(self.sync.stop)
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if stack is not None:
            await stack.aclose()
        if self._owns_redis:
            await self.redis.aclose()

    async def lookup(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        *,
        exact: bool = True,
        semantic: bool = True,
        similarity_threshold: float | None = None,
        identity: RequestIdentity | None = None,
    ) -> CacheHit | None:
        """Exact lookup, then semantic lookup within the request's scope (each if asked).

        similarity_threshold: a stricter one for this lookup (a tenant's); never below the
        cache's own.
        identity: `identify(namespace, endpoint, body)` when the caller made it already (the
        gateway makes one per request for single-flight, lookup and store).
        """
        if identity is None:
            identity = identify(namespace, endpoint, body)
        if exact:
            nsh, kh = identity.namespace_hash, identity.key_hash
            response = await self.failopen.run(
                lambda: self.entries_store.get_response(nsh, kh), None, what="exact lookup"
            )
            if response is not None:
                entry_id = identity.entry_id
                self._in_background(self.entries_store.touch(entry_id), "hit count")
                return CacheHit(kind="exact", entry_id=entry_id, response=response)
        if not (semantic and self.semantic_enabled) or not self.failopen.healthy:
            return None
        try:
            threshold = max(self.similarity_threshold, similarity_threshold or 0.0)
            return await self._semantic_lookup(identity, threshold)
        except Exception:
            # A fault in the embedder, index or verifier costs one model call, not the request.
            self.logger.exception("cache: semantic lookup failed; treated as a miss")
            return None

    async def _semantic_lookup(
        self, identity: RequestIdentity, threshold: float
    ) -> CacheHit | None:
        """Nearest cached questions in the scope, above the threshold, that the verifier
        allows and that were not reported wrong for this question."""
        query = await self._semantic_query(identity)
        if query is None:
            return None
        vector = await self._embed(query.question)
        if vector is None:
            return None
        neighbours = self.index.search(
            query.scope, vector, k=self.max_candidates, min_similarity=threshold
        )
        own = identity.namespace_hash + "."
        neighbours = [n for n in neighbours if n.entry_id.startswith(own)]
        if not neighbours:
            return None
        asked = _Asked(
            namespace=identity.namespace, model=identity.model, query=query, vector=vector
        )
        questions = [self._questions.get(n.entry_id) for n in neighbours]
        known = [q for q in questions if q is not None]
        if len(known) < len(questions):
            return await self._fetch_and_check(neighbours, asked)
        # Every candidate's question is known (an entry id fixes its question), so the
        # verifier runs first, on all of them at once, and only the answer it lets through is
        # read from Redis, with the questions reported wrong for it in the same round trip.
        verdicts = await self._verify(known, query, neighbours)
        for neighbour, question, verdict in zip(neighbours, known, verdicts, strict=True):
            if not verdict.allowed:
                continue
            fetched = await self.failopen.run(
                functools.partial(self.entries_store.answer_and_refusals, neighbour.entry_id),
                None,
                what="semantic lookup",
            )
            if fetched is None:
                return None  # Redis unavailable
            response, refusals = fetched
            if response is None:
                self.index.remove(neighbour.entry_id)  # expired or evicted meanwhile
                continue
            if self._refused(refusals, asked):
                continue
            return self._semantic_hit(asked, neighbour, question, response, verdict)
        return None

    async def _semantic_query(self, identity: RequestIdentity) -> SemanticQuery | None:
        """The request's question and scope, when its language has a semantic path.

        The scope is narrowed to the question's language and path: vectors of different
        embedders never meet, and a question is never answered in another language. Small
        talk in the history is left out of it (cache/semantic/small_talk.py).
        """
        query = identity.query
        if query is None or self.language_gate is None:
            return None
        route = self.language_gate.route(query.question)
        if route.path is None:
            return None
        scope = query.scope
        history = identity.body["messages"][:-1] if identity.endpoint == "chat" else []
        if self.small_talk is not None and history:
            skipped = await self.small_talk.skipped(history)
            if skipped:
                scope = scope_of(identity.endpoint, identity.canonical, skipped)
        scope = f"{scope}.{route.language}.{route.path}"
        return replace(query, scope=scope, language=route.language)

    async def _fetch_and_check(self, neighbours: list[Neighbour], asked: _Asked) -> CacheHit | None:
        """Reads every candidate's question, answer and refusals in one round trip, then
        verifies the live ones together."""
        candidates = await self.failopen.run(
            lambda: self.entries_store.candidates([n.entry_id for n in neighbours]),
            None,
            what="semantic lookup",
        )
        if candidates is None:
            return None
        live: list[tuple[Neighbour, Candidate]] = []
        for neighbour, candidate in zip(neighbours, candidates, strict=True):
            if candidate is None:
                self.index.remove(neighbour.entry_id)  # expired or evicted meanwhile
                continue
            self._remember_question(candidate.entry_id, candidate.question)
            if not self._refused(candidate.refusals, asked):
                live.append((neighbour, candidate))
        if not live:
            return None
        verdicts = await self._verify(
            [c.question for _, c in live], asked.query, [n for n, _ in live]
        )
        for (neighbour, candidate), verdict in zip(live, verdicts, strict=True):
            if verdict.allowed:
                return self._semantic_hit(
                    asked, neighbour, candidate.question, candidate.response(), verdict
                )
        return None

    async def _verify(
        self, cached_questions: list[str], query: SemanticQuery, neighbours: list[Neighbour]
    ) -> list[Verdict]:
        if self.verifier is None:
            return [Verdict(False, reason="no verifier") for _ in cached_questions]
        return await self.verifier.verify(
            cached_questions,
            query.question,
            similarities=[n.similarity for n in neighbours],
            language=query.language,
        )

    def _refused(self, refusals: dict[bytes, bytes], asked: _Asked) -> bool:
        return refuses(
            refusals, asked.query.question, asked.vector, min_similarity=self.refusal_similarity
        )

    def _semantic_hit(
        self,
        asked: _Asked,
        neighbour: Neighbour,
        cached_question: str,
        response: dict[str, Any],
        verdict: Verdict,
    ) -> CacheHit:
        self._in_background(self.entries_store.touch(neighbour.entry_id), "hit count")
        logged: dict[str, str | float | None] = {
            "namespace": asked.namespace,
            "model": asked.model,
            "scope": asked.query.scope,
            "entry_id": neighbour.entry_id,
            "cached_question": cached_question,
            "new_question": asked.query.question,
            "similarity": neighbour.similarity,
            "score": verdict.score,
        }
        nsh = neighbour.entry_id.partition(".")[0]
        self._in_background(self.feedback.log_hit(nsh, logged), "hit log")
        return CacheHit(
            kind="semantic",
            entry_id=neighbour.entry_id,
            response=response,
            similarity=neighbour.similarity,
        )

    def _remember_question(self, entry_id: str, question: str) -> None:
        if entry_id not in self._questions:
            if len(self._questions) >= RECENT_QUESTIONS:
                del self._questions[next(iter(self._questions))]  # the oldest
            self._questions[entry_id] = question

    async def _embed(self, text: str) -> Vector | None:
        """The question's vector (remembered briefly, as a store usually follows a miss)."""
        vector = self._recent_vectors.get(text)
        if vector is not None:
            self._recent_vectors.move_to_end(text)
            return vector
        if self.embedder is None:
            return None
        try:
            async with asyncio.timeout(self.embed_timeout_s):  # unlike wait_for, no task per call
                vector = await self.embedder.embed(text)
        except TimeoutError:
            self.logger.info(
                "cache: embedding took over %.2f s; semantic miss", self.embed_timeout_s
            )
            return None
        except Exception:
            self.logger.exception("cache: embedding failed; semantic miss")
            return None
        self._recent_vectors[text] = vector
        if len(self._recent_vectors) > RECENT_VECTORS:
            self._recent_vectors.popitem(last=False)
        return vector

    async def store(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        response: dict[str, Any],
        *,
        ttl_s: int | None = None,
        semantic: bool = True,
        identity: RequestIdentity | None = None,
    ) -> str | None:
        """Stores under the exact key and (unless `semantic` is False, for a namespace with
        exact caching only) in the semantic index; returns the entry id.

        identity: `identify(namespace, endpoint, body)` when the caller made it already.
        """
        if identity is None:
            identity = identify(namespace, endpoint, body)
        semantic = semantic and self.semantic_enabled
        query = await self._semantic_query(identity) if semantic else None
        vector = await self._embed(query.question) if query is not None else None
        entry = NewEntry(
            namespace=namespace,
            namespace_hash=identity.namespace_hash,
            key_hash=identity.key_hash,
            model=identity.model,
            endpoint=endpoint,
            question=query.question if query is not None else question_text(endpoint, body),
            response=response,
            ttl_s=int(ttl_s) if ttl_s and ttl_s > 0 else self.default_ttl_s,
            scope=query.scope if query is not None and vector is not None else None,
            vector=vector,
        )
        written = await self.failopen.run(
            lambda: self.entries_store.put(entry, max_entries=self.max_entries_per_namespace),
            None,
            what="store",
        )
        if written is None:
            return None
        expires_at, gone = written
        for entry_id in gone:
            self.index.remove(entry_id)
        if entry.scope is not None and entry.vector is not None:
            row = IndexRow(
                entry_id=entry.entry_id,
                scope=entry.scope,
                vector=entry.vector,
                expires_at=expires_at,
            )
            self.index.add(row.entry_id, row.scope, row.vector, row.expires_at)
            await self.sync.publish_add(row)
        await self.sync.publish_remove(gone)
        return entry.entry_id

    async def invalidate(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        entry_id: str | None = None,
    ) -> int:
        """Removes matching entries (all filters given must match); returns how many."""
        removed = await self.failopen.run(
            lambda: self._invalidate(namespace, model, entry_id),
            None,
            what="invalidate",
            timeout_s=self.admin_timeout_s,
        )
        if removed is None:
            return 0
        ids, count = removed
        for gone in ids:
            self.index.remove(gone)
        await self.sync.publish_remove(ids)
        return count

    async def _invalidate(
        self, namespace: str | None, model: str | None, entry_id: str | None
    ) -> tuple[list[str], int]:
        store = self.entries_store
        if entry_id is not None:
            parts = split_id(entry_id)
            if parts is None or (namespace is not None and parts[0] != namespace_hash(namespace)):
                return [], 0
            ids = [entry_id]
        else:
            hashes = (
                [namespace_hash(namespace)]
                if namespace is not None
                else list(await store.namespaces())
            )
            ids = [i for nsh in hashes for i in await store.ids(nsh)]
        if model is not None:
            models = await store.fields(ids, ["model"])
            ids = [
                i
                for i, (m,) in zip(ids, models, strict=True)
                if m is not None and m.decode() == model
            ]
        return ids, await store.delete(ids)

    async def entries(
        self, *, namespace: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[EntryInfo]:
        """A page of entries with their hit counts."""
        page = await self.failopen.run(
            lambda: self._entries(namespace, max(0, offset), max(0, limit)),
            None,
            what="entries",
            timeout_s=self.admin_timeout_s,
        )
        return page or []

    async def _entries(self, namespace: str | None, offset: int, limit: int) -> list[EntryInfo]:
        store = self.entries_store
        if namespace is not None:
            hashes = [namespace_hash(namespace)]
        else:
            names = await store.namespaces()
            hashes = sorted(names, key=lambda h: names[h])
        ids: list[str] = []
        for nsh in hashes:
            if len(ids) >= limit:
                break
            count = await store.count(nsh)
            if offset >= count:
                offset -= count
                continue
            ids += await store.ids(nsh, start=offset, stop=offset + limit - len(ids) - 1)
            offset = 0
        rows = await store.fields(ids, list(ENTRY_INFO_FIELDS))
        now = time.time()
        out = []
        for entry_id, values in zip(ids, rows, strict=True):
            ns, model, question, created, hits, expires = (
                v.decode() if v is not None else None for v in values
            )
            if ns is None:
                continue  # expired since the id was read
            out.append(
                EntryInfo(
                    entry_id=entry_id,
                    namespace=ns,
                    model=model or "",
                    question=question or "",
                    created_at=float(created or 0),
                    hits=int(hits or 0),
                    ttl_s=max(0, int(float(expires or 0) - now)),
                )
            )
        return out

    async def semantic_hits(
        self, *, namespace: str | None = None, limit: int = 50
    ) -> list[SemanticHit]:
        """The most recent semantic hits, newest first, for operators to review."""
        hits = await self.failopen.run(
            lambda: self._namespace_hashes(namespace, self.feedback.hits, limit),
            None,
            what="semantic hits",
            timeout_s=self.admin_timeout_s,
        )
        return hits or []

    async def negatives(
        self, *, namespace: str | None = None, limit: int = 1000
    ) -> list[SemanticHit]:
        """Hits reported wrong (labelled negatives), most recently reported first."""
        found = await self.failopen.run(
            lambda: self._namespace_hashes(namespace, self.feedback.negatives, limit),
            None,
            what="negatives",
            timeout_s=self.admin_timeout_s,
        )
        return found or []

    async def _namespace_hashes(
        self,
        namespace: str | None,
        read: Callable[..., Awaitable[list[SemanticHit]]],
        limit: int,
    ) -> list[SemanticHit]:
        hashes = (
            [namespace_hash(namespace)]
            if namespace is not None
            else list(await self.entries_store.namespaces())
        )
        return await read(hashes, limit=limit)

    async def mark_wrong(self, hit_id: str) -> SemanticHit | None:
        """Reports a logged semantic hit wrong: its entry never serves that question (or one
        within `refusal_similarity` of it) again, on every replica from the next lookup; the
        pair is kept as a labelled negative and counted. None when the hit is unknown (or
        has left the log); a repeated report changes nothing. Raises RedisUnavailable."""
        unavailable = object()
        hit = await self.failopen.run(
            lambda: self.feedback.hit(hit_id),
            unavailable,
            what="mark wrong",
            timeout_s=self.admin_timeout_s,
        )
        if hit is unavailable:
            raise RedisUnavailable("Redis did not answer; the hit was not marked")
        if not isinstance(hit, SemanticHit):
            return None
        parts = split_id(hit.entry_id)
        if parts is None:
            return None
        # The vector refuses rewordings too; without one, the normalised text alone.
        vector = await self._embed(hit.new_question) if self.semantic_enabled else None
        first = await self.failopen.run(
            lambda: self.feedback.report(
                hit, vector, refuse_key=self.entries_store.refuse_key(*parts)
            ),
            None,
            what="mark wrong",
            timeout_s=self.admin_timeout_s,
        )
        if first is None:
            raise RedisUnavailable("Redis did not answer; the hit was not marked")
        if first:
            await self.failopen.run(
                lambda: self.stats_store.record(hit.namespace, hit.model, "wrong", None),
                None,
                what="stats",
            )
        return replace(hit, wrong=True, reported_at=hit.reported_at or time.time())

    async def ping(self) -> bool:
        """True when Redis answers now (for /ready)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), self.admin_timeout_s))  # type: ignore[misc]
        except OUTAGE_ERRORS:
            return False

    def _in_background(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Runs bookkeeping after the answer has gone, failing open like everything else."""

        async def run() -> None:
            await self.failopen.run(lambda: coro, None, what=what)
            coro.close()  # not started when Redis was known to be down (no "never awaited")

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
