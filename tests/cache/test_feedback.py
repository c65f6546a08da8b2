"""Operator feedback on semantic hits, against fakeredis and the real Redis: the hit log, wrong
reports refused on every replica, labelled negatives, the wrong count, per-lookup thresholds."""

from __future__ import annotations

import asyncio
import time

import pytest

from cache.errors import RedisUnavailable
from cache.feedback import SemanticHit, normalise_question
from cache.redis_client import RedisClient, connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.verifier import AllowAll
from tests.cache.conftest import CacheFactory, answer, chat
from tests.cache.fakes import FakeEmbedder, OpenGate, bag_of_words
from tests.gateway.fakes import free_port

STORED = "cheap flights to Paris in May"
REWORDED = "in May cheap flights to Paris"  # the same words: cosine 1.0 under FakeEmbedder
REORDERED = "May in cheap flights to Paris"  # another text with the same vector
LONGER = "cheap flights to Paris in May please"  # cosine 0.926 to all of the above


async def _logged(
    cache: ResponseCache, count: int, namespace: str | None = None
) -> list[SemanticHit]:
    """The hit log once it holds `count` hits (hits are logged just after the answer)."""
    for _ in range(100):
        hits = await cache.semantic_hits(namespace=namespace, limit=100)
        if len(hits) >= count:
            return hits
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} logged hits, found {len(hits)}")


def test_the_fake_embedder_gives_the_similarities_these_tests_rely_on() -> None:
    assert float(bag_of_words(STORED) @ bag_of_words(REWORDED)) > 0.999
    assert float(bag_of_words(REWORDED) @ bag_of_words(REORDERED)) > 0.999
    assert 0.92 < float(bag_of_words(REWORDED) @ bag_of_words(LONGER)) < 0.93
    assert normalise_question(REWORDED) != normalise_question(REORDERED)
    assert normalise_question("In May, cheap flights to Paris?") == normalise_question(REWORDED)


async def test_semantic_hits_are_logged_newest_first_and_exact_hits_are_not(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(similarity_threshold=0.8)
    entry_id = await cache.store("acme", "chat", chat(STORED, model="m1"), answer("A"))
    await cache.store("globex", "chat", chat(STORED, model="m1"), answer("G"))
    started = time.time()
    assert (await cache.lookup("acme", "chat", chat(STORED, model="m1"))).kind == "exact"  # type: ignore[union-attr]
    assert await cache.lookup("acme", "chat", chat(REWORDED, model="m1")) is not None
    await _logged(cache, 1)
    assert await cache.lookup("acme", "chat", chat(LONGER, model="m1")) is not None
    await _logged(cache, 2)
    assert await cache.lookup("globex", "chat", chat(REWORDED, model="m1")) is not None
    everyone = await _logged(cache, 3)
    assert [(h.namespace, h.new_question) for h in everyone] == [
        ("globex", REWORDED),
        ("acme", LONGER),
        ("acme", REWORDED),
    ]
    acme = await cache.semantic_hits(namespace="acme")
    assert [h.new_question for h in acme] == [LONGER, REWORDED]
    newest = acme[0]
    assert newest.entry_id == entry_id and newest.model == "m1"
    assert newest.cached_question == STORED and newest.scope
    assert newest.similarity == pytest.approx(0.926, abs=0.001)
    assert newest.score is None and newest.wrong is False and newest.reported_at is None
    assert started - 1 <= newest.at <= time.time() + 1
    assert [h.hit_id for h in await cache.semantic_hits(limit=1)] == [everyone[0].hit_id]
    assert await cache.semantic_hits(namespace="initech") == []


async def test_the_hit_log_is_bounded_and_expires(
    make_cache: CacheFactory, redis: RedisClient
) -> None:
    cache = await make_cache(similarity_threshold=0.8, hit_log_size=2, hit_log_ttl_s=60)
    await cache.store("acme", "chat", chat(STORED), answer("A"))
    for count, question in enumerate((REWORDED, REORDERED, LONGER), start=1):
        assert await cache.lookup("acme", "chat", chat(question)) is not None
        await _logged(cache, min(count, 2))
    for _ in range(100):  # until the third hit has pushed the first out
        hits = await cache.semantic_hits()
        if hits[0].new_question == LONGER:
            break
        await asyncio.sleep(0.01)
    assert [h.new_question for h in hits] == [LONGER, REORDERED]
    key = cache.feedback.hits_key(hits[0].hit_id.partition(".")[0])
    assert 0 < await redis.ttl(key) <= 60


async def test_a_wrong_report_refuses_the_pair_at_once_on_every_replica(
    make_cache: CacheFactory,
) -> None:
    first = await make_cache(similarity_threshold=0.8)
    second = await make_cache(similarity_threshold=0.8)
    entry_id = await first.store("acme", "chat", chat(STORED), answer("A"))
    for _ in range(100):  # the second replica learns of the entry through the sync stream
        if await second.lookup("acme", "chat", chat(REWORDED), exact=False) is not None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the second replica never found the entry")
    hit = await first.lookup("acme", "chat", chat(REWORDED))
    assert hit is not None and hit.kind == "semantic" and hit.entry_id == entry_id
    logged = await _logged(first, 2)
    marked = await first.mark_wrong(logged[0].hit_id)
    assert marked is not None and marked.wrong and marked.new_question == REWORDED
    # No wait: both replicas refuse the pair from the next lookup on, and keep refusing it.
    for cache in (first, second, first, second):
        assert await cache.lookup("acme", "chat", chat(REWORDED)) is None
    # A replica that has not seen the entry's question yet reads it with the refusals.
    third = await make_cache(similarity_threshold=0.8)
    assert await third.lookup("acme", "chat", chat(REWORDED)) is None
    # Questions like it (within the refusal similarity) are refused too; others are not.
    for cache in (first, second, third):
        assert await cache.lookup("acme", "chat", chat(REORDERED)) is None
        assert await cache.lookup("acme", "chat", chat("In May, cheap flights to Paris?")) is None
        other = await cache.lookup("acme", "chat", chat(LONGER))
        assert other is not None and other.entry_id == entry_id
        exact = await cache.lookup("acme", "chat", chat(STORED))
        assert exact is not None and exact.kind == "exact"
    listed = await first.semantic_hits(namespace="acme", limit=100)
    assert [h.wrong for h in listed if h.hit_id == marked.hit_id] == [True]
    assert sum(h.wrong for h in listed) == 1


async def test_reports_are_kept_as_labelled_negatives_and_counted_once(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(similarity_threshold=0.8)
    await cache.store("acme", "chat", chat(STORED, model="m1"), answer("A"))
    for question in (REWORDED, LONGER):
        assert await cache.lookup("acme", "chat", chat(question, model="m1")) is not None
    hits = await _logged(cache, 2)
    reported = next(h for h in hits if h.new_question == REWORDED)
    assert await cache.mark_wrong(reported.hit_id) is not None
    again = await cache.mark_wrong(reported.hit_id)  # a retried report
    assert again is not None and again.wrong
    negatives = await cache.negatives(namespace="acme")
    assert len(negatives) == 1
    negative = negatives[0]
    assert (negative.namespace, negative.scope, negative.model) == ("acme", reported.scope, "m1")
    assert (negative.cached_question, negative.new_question) == (STORED, REWORDED)
    assert negative.wrong and negative.reported_at is not None
    assert await cache.negatives(namespace="globex") == []
    assert [n.hit_id for n in await cache.negatives()] == [reported.hit_id]
    windows = await cache.stats_store.read()
    assert windows.since_start.count("wrong", namespace="acme") == 1
    assert windows.last_minute.count("wrong", model="m1") == 1
    assert await cache.mark_wrong("not-a-hit") is None
    assert await cache.mark_wrong(f"{reported.hit_id.partition('.')[0]}.1-0") is None


async def test_a_wrong_report_that_cannot_reach_redis_raises() -> None:
    redis = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    cache = ResponseCache(
        redis, embedder=FakeEmbedder(), verifier=AllowAll(0.57), language_gate=OpenGate()
    )
    async with cache:
        with pytest.raises(RedisUnavailable):
            await cache.mark_wrong("0123456789abcdef.1-0")
        assert await cache.semantic_hits() == [] and await cache.negatives() == []
    await redis.aclose()


async def test_a_stricter_lookup_threshold_refuses_what_the_default_accepts(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(similarity_threshold=0.85)
    await cache.store("acme", "chat", chat(STORED), answer("A"))
    assert await cache.lookup("acme", "chat", chat(LONGER)) is not None  # 0.926
    assert await cache.lookup("acme", "chat", chat(LONGER), similarity_threshold=0.95) is None
    # A threshold below the cache's own does not loosen it (0.833 stays a miss).
    june = chat("cheap flights to Paris in June")
    assert await cache.lookup("acme", "chat", june, similarity_threshold=0.5) is None


async def test_a_store_without_semantic_is_exact_only(make_cache: CacheFactory) -> None:
    embedder = FakeEmbedder()
    cache = await make_cache(similarity_threshold=0.8, embedder=embedder)
    await cache.store("acme", "chat", chat(STORED), answer("A"), semantic=False)
    assert embedder.calls == 0 and len(cache.index) == 0
    hit = await cache.lookup("acme", "chat", chat(STORED), semantic=False)
    assert hit is not None and hit.kind == "exact"
    assert await cache.lookup("acme", "chat", chat(REWORDED)) is None
