"""In-process nearest-neighbour search, partitioned by scope so a query only meets its peers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cache.embedder import Matrix, Vector
from cache.hnsw import GraphBuild, HnswGraph, hnswlib_available

# Up to here exact search costs a fraction of a millisecond on an idle CPU; past it the
# matrix leaves the CPU cache and cost grows faster than the size (docs/cache.md).
DEFAULT_HNSW_MIN_ENTRIES = 10_000
# OpenBLAS (numpy's BLAS) splits a matrix-vector product over its threads from 460,800
# elements on (115,200 x GEMM_MULTITHREAD_THRESHOLD); with the cores shared with the embedding
# model that took 5 to 25 times the CPU of one thread here (2,000 x 384 floats: 1.5 to 6.5 ms
# against 0.06 ms), so products are done in blocks below that size.
BLOCK_ELEMENTS = 400_000


@dataclass(frozen=True)
class Neighbour:
    """A candidate entry and its cosine similarity to the query."""

    entry_id: str
    similarity: float


class VectorIndex(Protocol):
    """The semantic cache's index: add, remove, nearest within a scope."""

    def add(self, entry_id: str, scope: str, vector: Vector, expires_at: float) -> None: ...

    def remove(self, entry_id: str) -> bool: ...

    def search(
        self, scope: str, vector: Vector, *, k: int, min_similarity: float
    ) -> list[Neighbour]: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


def similarities(matrix: Matrix, vector: Vector) -> npt.NDArray[np.floating[Any]]:
    """matrix @ vector, in row blocks small enough for BLAS to keep to one thread."""
    n = len(matrix)
    rows = max(1, BLOCK_ELEMENTS // max(1, matrix.shape[1]))
    if n <= rows:
        return matrix @ vector
    out = np.empty(n, dtype=np.result_type(matrix, vector))
    for start in range(0, n, rows):
        np.matmul(matrix[start : start + rows], vector, out=out[start : start + rows])
    return out


class _ExactPartition:
    """One scope's vectors as matrix rows (grown by doubling); removal moves the last row in."""

    def __init__(self, dim: int) -> None:
        self.matrix = np.empty((8, dim), dtype=np.float32)
        self.expires = np.empty(8, dtype=np.float64)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, entry_id: str, vector: Vector, expires_at: float) -> None:
        row = self.rows.get(entry_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.matrix):
                self.matrix = np.concatenate([self.matrix, np.empty_like(self.matrix)])
                self.expires = np.concatenate([self.expires, np.empty_like(self.expires)])
            self.ids.append(entry_id)
            self.rows[entry_id] = row
        self.matrix[row] = vector
        self.expires[row] = expires_at

    def remove(self, entry_id: str) -> None:
        row = self.rows.pop(entry_id)
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.expires[row] = self.expires[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def search(self, vector: Vector, k: int, min_similarity: float, now: float) -> list[Neighbour]:
        n = len(self.ids)
        sims = similarities(self.matrix[:n], vector)
        sims[self.expires[:n] <= now] = -np.inf
        # The threshold first: it usually leaves a handful of rows, so the top k is chosen
        # among those rather than partitioning the whole scope (the same k rows either way).
        top = np.flatnonzero(sims >= min_similarity)
        if len(top) > k:
            top = top[np.argpartition(-sims[top], k - 1)[:k]]
        top = top[np.argsort(-sims[top])]
        return [Neighbour(self.ids[i], float(sims[i])) for i in top]

    def memory_bytes(self) -> int:
        ids = sum(49 + len(i) for i in self.ids)  # str objects; dict/list slots roughly double it
        return int(self.matrix.nbytes + self.expires.nbytes + 2 * ids + 100 * len(self.ids))


class _Partition:
    """One scope: always the exact rows; past a size, also an HNSW graph used once built."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.exact = _ExactPartition(dim)
        self.graph: HnswGraph | None = None
        self.build: GraphBuild | None = None
        self.next_build_at = 0

    def __len__(self) -> int:
        return len(self.exact)

    def _graph_change(self, entry_id: str, vector: Vector | None) -> None:
        if self.graph is None and self.build is not None:
            self.graph = self.build.record(entry_id, vector)
            if self.graph is None:
                return  # queued for the build thread
            self.build = None
        if self.graph is not None:
            if vector is None:
                self.graph.remove(entry_id)
            else:
                self.graph.add(entry_id, vector)

    def add(self, entry_id: str, vector: Vector, expires_at: float) -> None:
        self.exact.add(entry_id, vector, expires_at)
        self._graph_change(entry_id, vector)

    def remove(self, entry_id: str) -> None:
        self.exact.remove(entry_id)
        self._graph_change(entry_id, None)

    def maybe_build(self, min_entries: int | None, logger: logging.Logger) -> None:
        """Starts a graph build once the partition is big enough (again after a failure)."""
        if self.build is not None and self.build.failed:
            self.build = None
            self.next_build_at = 2 * len(self)
        if min_entries is None or self.graph is not None or self.build is not None:
            return
        n = len(self)
        if n >= max(min_entries, self.next_build_at):
            self.build = GraphBuild(self.dim, self.exact.ids, self.exact.matrix[:n], logger)

    def collect_build(self) -> None:
        """Switches to the graph once its build thread has finished."""
        if self.graph is None and self.build is not None:
            ready = self.build.ready()
            if ready is not None:
                self.graph, self.build = ready, None

    def search(self, vector: Vector, k: int, min_similarity: float, now: float) -> list[Neighbour]:
        self.collect_build()
        if self.graph is None:
            return self.exact.search(vector, k, min_similarity, now)
        # Asks for a few more than k: expired entries are filtered out afterwards.
        found = self.graph.search(vector, k + 4)
        out = []
        for entry_id, sim in found:
            row = self.exact.rows.get(entry_id)
            if row is None or self.exact.expires[row] <= now or sim < min_similarity:
                continue
            out.append(Neighbour(entry_id, sim))
        return out[:k]

    def memory_bytes(self) -> int:
        graph = self.graph.memory_bytes() if self.graph is not None else 0
        return self.exact.memory_bytes() + graph


class ScopedIndex:
    """Search inside each scope's partition: exact (numpy), plus HNSW for very large ones.

    Most scopes are small (one conversation prefix, one system prompt), where an exact dot
    product is cheaper than any graph and never misses. A scope past `hnsw_min_entries`
    (first turns of a busy chatbot share one scope) also gets an HNSW graph built in the
    background; see docs/cache.md for the measurements behind the default. None (or hnswlib
    not installed) keeps every partition exact.
    """

    def __init__(
        self,
        dim: int,
        *,
        hnsw_min_entries: int | None = DEFAULT_HNSW_MIN_ENTRIES,
        logger: logging.Logger | None = None,
    ) -> None:
        self.dim = dim
        self.logger = logger or logging.getLogger("sluice.cache")
        if hnsw_min_entries is not None and not hnswlib_available():
            self.logger.info("cache: hnswlib not installed; every scope uses exact search")
            hnsw_min_entries = None
        self.hnsw_min_entries = hnsw_min_entries
        self._partitions: dict[str, _Partition] = {}
        self._scope_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._scope_of)

    def add(self, entry_id: str, scope: str, vector: Vector, expires_at: float) -> None:
        """Adds or replaces an entry (an entry never changes scope, but a re-store may)."""
        old = self._scope_of.get(entry_id)
        if old is not None and old != scope:
            self.remove(entry_id)
        part = self._partitions.get(scope)
        if part is None:
            part = self._partitions[scope] = _Partition(self.dim)
        part.add(entry_id, np.asarray(vector, dtype=np.float32), expires_at)
        self._scope_of[entry_id] = scope
        part.maybe_build(self.hnsw_min_entries, self.logger)

    def remove(self, entry_id: str) -> bool:
        scope = self._scope_of.pop(entry_id, None)
        if scope is None:
            return False
        part = self._partitions[scope]
        part.remove(entry_id)
        if not len(part):
            del self._partitions[scope]
        return True

    def search(
        self, scope: str, vector: Vector, *, k: int, min_similarity: float
    ) -> list[Neighbour]:
        """The `k` nearest unexpired entries of the scope at or above `min_similarity`."""
        part = self._partitions.get(scope)
        if part is None:
            return []
        return part.search(vector, k, min_similarity, time.time())

    def clear(self) -> None:
        self._partitions.clear()
        self._scope_of.clear()

    def memory_bytes(self) -> int:
        return sum(p.memory_bytes() for p in self._partitions.values()) + 200 * len(self._scope_of)

    def graphs_ready(self) -> int:
        """How many partitions search an HNSW graph now (for benchmarks and tests)."""
        for part in self._partitions.values():
            part.collect_build()
        return sum(1 for p in self._partitions.values() if p.graph is not None)
