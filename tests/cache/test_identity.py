"""A request's identity: the exact key and the scope, cut from one canonical form."""

from __future__ import annotations

from cache.identity import identify
from cache.keys import exact_key, namespace_hash
from cache.scope import semantic_query
from tests.cache.conftest import CacheFactory, answer, chat


def test_the_identity_holds_the_exact_key_and_the_scope_of_the_request() -> None:
    body = chat("  what about its museums ", system="be brief", temperature=0)
    made = identify("ns", "chat", body)
    assert made.key_hash == exact_key("ns", "chat", body)
    assert made.namespace_hash == namespace_hash("ns")
    assert made.entry_id == f"{namespace_hash('ns')}.{made.key_hash}"
    assert made.query == semantic_query("ns", "chat", body)
    assert made.query is not None and made.query.question == "what about its museums"
    assert made.model == "m"


def test_a_request_without_a_plain_question_has_no_semantic_query() -> None:
    body = chat("x")
    body["messages"].append({"role": "assistant", "content": "y"})
    assert identify("ns", "chat", body).query is None
    assert identify("ns", "completion", {"model": "m", "prompt": ["a", "b"]}).query is None


async def test_lookup_and_store_take_an_identity_made_by_the_caller(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(similarity_threshold=0.5)
    body = chat("cheap flights to Paris")
    made = identify("ns", "chat", body)
    assert await cache.store("ns", "chat", body, answer("A"), identity=made) == made.entry_id
    exact = await cache.lookup("ns", "chat", body, identity=made)
    assert exact is not None and exact.kind == "exact" and exact.entry_id == made.entry_id
    reworded = chat("Paris cheap flights to")
    hit = await cache.lookup("ns", "chat", reworded, identity=identify("ns", "chat", reworded))
    assert hit is not None and hit.kind == "semantic" and hit.entry_id == made.entry_id
