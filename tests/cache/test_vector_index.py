"""The scoped exact index: search stays inside a scope, removals and expiry are honoured."""

from __future__ import annotations

import time

import numpy as np

from cache.vector_index import ScopedIndex
from tests.cache.fakes import DIM, bag_of_words

FAR = time.time() + 3600


def test_search_only_within_scope_and_in_order() -> None:
    index = ScopedIndex(DIM)
    index.add("a", "s1", bag_of_words("red green blue"), FAR)
    index.add("b", "s1", bag_of_words("red green"), FAR)
    index.add("c", "s2", bag_of_words("red green blue"), FAR)
    found = index.search("s1", bag_of_words("red green blue"), k=5, min_similarity=0.1)
    assert [n.entry_id for n in found] == ["a", "b"]
    assert found[0].similarity > found[1].similarity
    assert index.search("s3", bag_of_words("red"), k=5, min_similarity=0.0) == []
    assert [
        n.entry_id
        for n in index.search("s1", bag_of_words("red green blue"), k=1, min_similarity=0.1)
    ] == ["a"]


def test_threshold_removal_and_expiry() -> None:
    index = ScopedIndex(DIM)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, v in enumerate(vectors):
        index.add(f"e{i}", "s", v, FAR if i != 7 else time.time() - 1)
    assert len(index) == 50
    assert index.search("s", vectors[7], k=1, min_similarity=0.99) == []  # expired
    assert index.remove("e3") and not index.remove("e3")
    assert index.search("s", vectors[3], k=1, min_similarity=0.99) == []
    assert (
        index.search("s", vectors[49], k=1, min_similarity=0.99)[0].entry_id == "e49"
    )  # moved row
    index.add("e49", "other", vectors[49], FAR)  # re-added under another scope
    assert index.search("s", vectors[49], k=1, min_similarity=0.99) == []
    assert len(index) == 49
    index.clear()
    assert len(index) == 0
