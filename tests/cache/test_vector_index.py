"""The scoped exact index: search stays inside a scope, removals and expiry are honoured."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cache import vector_index
from cache.vector_index import ScopedIndex, similarities
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


def _random_unit(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _wait_for_graph(index: ScopedIndex) -> None:
    deadline = time.monotonic() + 20
    while index.graphs_ready() == 0:
        assert time.monotonic() < deadline, "HNSW build did not finish"
        time.sleep(0.01)


def test_large_partition_switches_to_hnsw_without_losing_changes() -> None:
    index = ScopedIndex(DIM, hnsw_min_entries=200)
    vectors = _random_unit(400, 1)
    for i in range(300):
        index.add(f"e{i}", "big", vectors[i], FAR)
    index.add("small", "tiny", vectors[0], FAR)
    # Changes made while the graph is being built must reach it.
    for i in range(300, 400):
        index.add(f"e{i}", "big", vectors[i], FAR)
    for i in range(0, 20):
        index.remove(f"e{i}")
    _wait_for_graph(index)
    assert index.graphs_ready() == 1  # the tiny scope stays exact
    for i in (25, 150, 310, 399):
        found = index.search("big", vectors[i], k=2, min_similarity=0.5)
        assert found[0].entry_id == f"e{i}" and found[0].similarity > 0.99
    assert index.search("big", vectors[5], k=1, min_similarity=0.99) == []
    index.remove("e150")
    index.add("e5", "big", vectors[5], FAR)
    assert index.search("big", vectors[150], k=1, min_similarity=0.99) == []
    assert index.search("big", vectors[5], k=1, min_similarity=0.99)[0].entry_id == "e5"
    index.add("gone", "big", vectors[399] * -1, time.time() - 1)  # expired: never returned
    assert all(
        n.entry_id != "gone" for n in index.search("big", -vectors[399], k=3, min_similarity=0.0)
    )


@pytest.mark.parametrize("block_rows", [None, 16, 7])
def test_exact_search_is_the_top_k_above_the_threshold(
    block_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block_rows is not None:  # products cut into row blocks give the same neighbours
        monkeypatch.setattr(vector_index, "BLOCK_ELEMENTS", block_rows * DIM)
    index = ScopedIndex(DIM, hnsw_min_entries=None)
    vectors = _random_unit(300, 2)
    expired = set(range(0, 300, 7))
    for i, v in enumerate(vectors):
        index.add(f"e{i}", "s", v, time.time() - 1 if i in expired else FAR)
    queries = _random_unit(20, 3)
    for q in (*queries, *(vectors[i] + 0.3 * queries[0] for i in range(10))):
        q = q / np.linalg.norm(q)
        sims = vectors @ q
        live = [i for i in np.argsort(-sims) if i not in expired]
        for k, threshold in ((1, 0.0), (4, 0.05), (4, 0.5), (50, -1.0), (400, 0.1)):
            want = [f"e{i}" for i in live if sims[i] >= threshold][:k]
            found = index.search("s", q, k=k, min_similarity=threshold)
            assert [n.entry_id for n in found] == want
            assert [n.similarity for n in found] == sorted(
                (n.similarity for n in found), reverse=True
            )


def test_similarities_in_blocks_equal_one_product(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, vector = _random_unit(1000, 4), _random_unit(1, 5)[0]
    whole = matrix @ vector
    for rows in (1, 7, 999, 1000, 5000):
        monkeypatch.setattr(vector_index, "BLOCK_ELEMENTS", rows * DIM)
        got = similarities(matrix, vector)
        assert got.dtype == np.float32 and np.allclose(got, whole, rtol=0, atol=1e-6)
