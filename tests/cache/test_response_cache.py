"""ResponseCache against fakeredis and the real Redis: hits, isolation, TTL, LRU, operations."""

from __future__ import annotations

import asyncio

from cache.redis_client import RedisClient
from tests.cache.conftest import CacheFactory, answer, chat
from tests.cache.fakes import DecidingVerifier


async def test_exact_hit_after_store_ignores_stream_and_user(make_cache: CacheFactory) -> None:
    cache = await make_cache(semantic_enabled=False)
    body = chat("What is the capital of France?", temperature=0)
    assert await cache.lookup("acme", "chat", body) is None
    entry_id = await cache.store("acme", "chat", body, answer("Paris"))
    assert entry_id is not None
    hit = await cache.lookup("acme", "chat", {**body, "stream": True, "user": "u-42"})
    assert hit is not None and hit.kind == "exact" and hit.entry_id == entry_id
    assert hit.response["choices"][0]["message"]["content"] == "Paris"
    assert await cache.lookup("acme", "chat", {**body, "temperature": 0.7}) is None


async def test_semantic_hit_within_scope(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.9)
    await cache.store("acme", "chat", chat("cheap flights to Paris in May"), answer("A"))
    hit = await cache.lookup("acme", "chat", chat("in May cheap flights to Paris"))
    assert hit is not None and hit.kind == "semantic"
    assert hit.similarity is not None and hit.similarity > 0.99
    assert (
        await cache.lookup("acme", "chat", chat("in May cheap flights to Paris"), semantic=False)
        is None
    )
    assert await cache.lookup("acme", "chat", chat("a recipe for onion soup")) is None


async def test_semantic_only_lookup_skips_the_exact_stage(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.9)
    body = chat("cheap flights to Paris in May")
    await cache.store("acme", "chat", body, answer("A"))
    hit = await cache.lookup("acme", "chat", body, exact=False)
    # The stored question itself, found by meaning: similarity 1, not an exact hit.
    assert hit is not None and hit.kind == "semantic"
    assert await cache.lookup("acme", "chat", body, exact=False, semantic=False) is None


async def test_namespaces_are_isolated_exact_and_semantic(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.5)
    body = chat("How do I reset my password?")
    await cache.store("tenant-a", "chat", body, answer("A's answer"))
    assert await cache.lookup("tenant-b", "chat", body) is None
    assert await cache.lookup("tenant-b", "chat", chat("How do I reset my password")) is None
    assert await cache.lookup("tenant-a", "chat", chat("How do I reset my password")) is not None
    assert [e.namespace for e in await cache.entries(namespace="tenant-b")] == []


async def test_multi_turn_scope_rules(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.9)

    def convo(earlier: str, last: str, system: str = "be brief", **params: object) -> dict:
        return {
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": last},
            ],
            **params,
        }

    await cache.store(
        "ns", "chat", convo("tell me about Paris", "what about its museums"), answer("Louvre")
    )
    # Same conversation so far, follow-up reworded: allowed.
    hit = await cache.lookup("ns", "chat", convo("tell me about Paris", "its museums what about"))
    assert hit is not None and hit.kind == "semantic"
    # Same follow-up in another conversation, system prompt, model or parameters: never.
    assert (
        await cache.lookup("ns", "chat", convo("tell me about Rome", "what about its museums"))
        is None
    )
    assert (
        await cache.lookup(
            "ns", "chat", convo("tell me about Paris", "what about its museums", system="be long")
        )
        is None
    )
    assert (
        await cache.lookup(
            "ns", "chat", {**convo("tell me about Paris", "its museums what about"), "model": "m2"}
        )
        is None
    )
    assert (
        await cache.lookup(
            "ns", "chat", convo("tell me about Paris", "its museums what about", temperature=1.5)
        )
        is None
    )
    # A conversation whose last turn is not a user message has no semantic question.
    tail = convo("tell me about Paris", "what about its museums")
    tail["messages"].append({"role": "assistant", "content": "x"})
    assert await cache.lookup("ns", "chat", tail) is None


async def test_the_verifier_can_veto_a_semantic_match(make_cache: CacheFactory) -> None:
    seen: list[tuple[str, str]] = []

    def guard(cached: str, new: str) -> bool:
        seen.append((cached, new))
        return False

    cache = await make_cache(similarity_threshold=0.5, verifier=DecidingVerifier(guard))
    await cache.store("ns", "chat", chat("flights to Paris"), answer("A"))
    assert await cache.lookup("ns", "chat", chat("Paris flights to")) is None
    assert seen == [("flights to Paris", "Paris flights to")]


async def test_ttl_expiry(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.9)
    body = chat("short lived question")
    await cache.store("ns", "chat", body, answer("A"), ttl_s=1)
    await cache.store("ns", "chat", chat("long lived question"), answer("B"))
    assert await cache.lookup("ns", "chat", body) is not None
    await asyncio.sleep(1.3)
    assert await cache.lookup("ns", "chat", body) is None
    assert await cache.lookup("ns", "chat", chat("question short lived")) is None
    assert await cache.lookup("ns", "chat", chat("long lived question")) is not None
    infos = await cache.entries(namespace="ns")
    assert [e.question for e in infos] == ["long lived question"]
    assert 86_000 < infos[0].ttl_s <= 86_400


async def test_lru_bound_evicts_least_recently_used(make_cache: CacheFactory) -> None:
    cache = await make_cache(max_entries_per_namespace=3, semantic_enabled=False)
    bodies = [chat(f"question number {i}") for i in range(4)]
    for body in bodies[:3]:
        await cache.store("ns", "chat", body, answer("x"))
    assert await cache.lookup("ns", "chat", bodies[0]) is not None  # 0 is now fresh; 1 is oldest
    await asyncio.sleep(0.05)  # the hit's LRU touch runs after the answer
    await cache.store("ns", "chat", bodies[3], answer("x"))
    present = [await cache.lookup("ns", "chat", b) is not None for b in bodies]
    assert present == [True, False, True, True]
    await cache.store("other", "chat", bodies[1], answer("x"))  # bounds are per namespace
    assert len(await cache.entries(namespace="ns")) == 3


async def test_evicted_entries_leave_the_vector_index(make_cache: CacheFactory) -> None:
    cache = await make_cache(max_entries_per_namespace=1, similarity_threshold=0.5)
    await cache.store("ns", "chat", chat("alpha beta gamma"), answer("1"))
    await cache.store("ns", "chat", chat("delta epsilon"), answer("2"))
    assert len(cache.index) == 1
    assert await cache.lookup("ns", "chat", chat("gamma beta alpha")) is None


async def test_invalidate_by_namespace_model_and_id(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.5)
    a = await cache.store("ns1", "chat", chat("q one", model="m1"), answer("x"))
    await cache.store("ns1", "chat", chat("q two", model="m2"), answer("x"))
    await cache.store("ns2", "chat", chat("q three", model="m1"), answer("x"))
    await cache.store("ns2", "chat", chat("q four", model="m2"), answer("x"))
    assert a is not None
    assert await cache.invalidate(entry_id=a, namespace="ns2") == 0  # filters must all match
    assert await cache.invalidate(entry_id=a) == 1
    assert await cache.lookup("ns1", "chat", chat("q one", model="m1")) is None
    assert await cache.invalidate(model="m1") == 1  # only ns2's m1 is left
    assert await cache.invalidate(namespace="ns2") == 1
    assert [e.question for e in await cache.entries()] == ["q two"]
    assert await cache.invalidate(entry_id="not-an-id") == 0
    assert len(cache.index) == 1


async def test_entries_are_paged_with_hit_counts(make_cache: CacheFactory) -> None:
    cache = await make_cache(semantic_enabled=False)
    for ns in ("a", "b"):
        for i in range(3):
            await cache.store(ns, "chat", chat(f"{ns} question {i}"), answer("x"))
    for _ in range(2):
        await cache.lookup("a", "chat", chat("a question 1"))
    await asyncio.sleep(0.05)
    all_entries = await cache.entries(limit=100)
    assert sorted(e.namespace for e in all_entries) == ["a"] * 3 + ["b"] * 3
    page = [e.entry_id for e in await cache.entries(offset=2, limit=2)]
    assert page == [e.entry_id for e in all_entries[2:4]]
    hits = {e.question: e.hits for e in all_entries}
    assert hits["a question 1"] == 2 and hits["a question 0"] == 0
    assert all("question" not in e.entry_id for e in all_entries)


async def test_a_second_instance_rebuilds_its_index_from_redis(
    make_cache: CacheFactory, redis: RedisClient
) -> None:
    first = await make_cache(similarity_threshold=0.9)
    await first.store("ns", "chat", chat("how to boil an egg"), answer("10 min"))
    second = await make_cache(similarity_threshold=0.9)
    assert len(second.index) == 1
    hit = await second.lookup("ns", "chat", chat("egg boil how to an"))
    assert hit is not None and hit.kind == "semantic"


async def test_replica_sees_stores_and_removals_within_a_second(make_cache: CacheFactory) -> None:
    a = await make_cache(similarity_threshold=0.9)
    b = await make_cache(similarity_threshold=0.9)
    entry_id = await a.store("ns", "chat", chat("best pizza in Naples"), answer("x"))

    async def found() -> bool:
        return await b.lookup("ns", "chat", chat("in Naples best pizza")) is not None

    for _ in range(20):
        if await found():
            break
        await asyncio.sleep(0.05)
    assert await found()
    assert entry_id is not None and await b.invalidate(entry_id=entry_id) == 1
    for _ in range(20):
        if len(a.index) == 0:
            break
        await asyncio.sleep(0.05)
    assert len(a.index) == 0


async def test_ping(make_cache: CacheFactory) -> None:
    cache = await make_cache()
    assert await cache.ping() is True


async def test_failure_while_fetching_candidates_is_a_miss(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.5)
    await cache.store("ns", "chat", chat("flights to Paris"), answer("A"))

    async def broken(entry_ids: object) -> None:
        raise ConnectionError("Redis went away")

    cache.entries_store.candidates = broken  # type: ignore[assignment,method-assign]
    assert await cache.lookup("ns", "chat", chat("Paris flights to")) is None
    assert not cache.failopen.healthy


async def test_a_failing_verifier_is_a_miss_not_an_error(make_cache: CacheFactory) -> None:
    def guard(cached: str, new: str) -> bool:
        raise ValueError("verifier bug")

    cache = await make_cache(similarity_threshold=0.5, verifier=DecidingVerifier(guard))
    await cache.store("ns", "chat", chat("flights to Paris"), answer("A"))
    assert await cache.lookup("ns", "chat", chat("Paris flights to")) is None


async def test_known_candidates_are_verified_before_their_answers_are_read(
    make_cache: CacheFactory, redis: RedisClient
) -> None:
    seen: list[str] = []

    def guard(cached: str, new: str) -> bool:
        seen.append(new)
        return "onion" not in new

    cache = await make_cache(similarity_threshold=0.5, verifier=DecidingVerifier(guard))
    entry_id = await cache.store("ns", "chat", chat("cheap flights to Paris in May"), answer("A"))
    assert entry_id is not None
    reads: list[str] = []
    read = cache.entries_store.answer_and_refusals

    async def counted(entry_id: str) -> tuple[dict[str, object] | None, dict[bytes, bytes]]:
        reads.append(entry_id)
        return await read(entry_id)

    cache.entries_store.answer_and_refusals = counted  # type: ignore[method-assign]
    first = await cache.lookup("ns", "chat", chat("in May cheap flights to Paris"), exact=False)
    assert first is not None and first.response == answer("A")
    assert reads == []  # the first time, question and answer came in one round trip
    # Now the question is known: a rejected candidate costs no read, an accepted one one read.
    vetoed = chat("cheap flights to Paris in May onion soup")
    assert await cache.lookup("ns", "chat", vetoed, exact=False) is None
    assert reads == [] and seen[-1] == "cheap flights to Paris in May onion soup"
    again = await cache.lookup("ns", "chat", chat("May: cheap flights to Paris"), exact=False)
    assert again is not None and again.entry_id == entry_id and again.response == answer("A")
    assert again.similarity is not None and reads == [entry_id]
    # An entry gone from Redis behind the index's back is noticed when its answer is read.
    key = cache.entries_store.key_of(entry_id)
    assert key is not None
    await redis.delete(key)
    assert (
        await cache.lookup("ns", "chat", chat("Paris: cheap flights in May"), exact=False) is None
    )
    assert len(cache.index) == 0


async def test_known_candidate_read_fails_open(make_cache: CacheFactory) -> None:
    cache = await make_cache(similarity_threshold=0.5)
    await cache.store("ns", "chat", chat("cheap flights to Paris in May"), answer("A"))
    assert await cache.lookup("ns", "chat", chat("in May cheap flights to Paris")) is not None

    async def down(entry_id: str) -> None:
        raise ConnectionError("Redis went away")

    cache.entries_store.answer_and_refusals = down  # type: ignore[method-assign]
    assert await cache.lookup("ns", "chat", chat("May cheap flights to Paris"), exact=False) is None
    assert cache.failopen.outages == 1 and not cache.failopen.healthy
    assert len(cache.index) == 1  # an outage is not a removal


async def test_all_candidates_of_a_lookup_go_to_the_verifier_in_one_call(
    make_cache: CacheFactory,
) -> None:
    verifier = DecidingVerifier(lambda cached, new: cached != "cheap flights to Paris")
    cache = await make_cache(similarity_threshold=0.5, verifier=verifier)
    stored = [
        "cheap flights to Paris",
        "cheap flights to Paris today",
        "cheap flights to Paris in May",
    ]
    for text in stored:
        await cache.store("ns", "chat", chat(text), answer(text))
    # First with the candidates' questions read from Redis, then with them remembered.
    for _ in range(2):
        hit = await cache.lookup("ns", "chat", chat("Paris cheap flights to"), exact=False)
        assert hit is not None and hit.response == answer("cheap flights to Paris today")
    assert verifier.calls == [stored, stored]  # best first; the vetoed best one is passed over
