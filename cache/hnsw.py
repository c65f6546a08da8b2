"""An HNSW graph (hnswlib) for a scope partition too large for exact search to stay cheap.

Built in a background thread from a snapshot of the partition; adds and removals made
meanwhile are queued and replayed by that same thread, so the event loop never waits for a
build and the graph goes live complete. hnswlib is optional (the `hnsw` extra): without it
every partition stays exact.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from cache.embedder import Matrix, Vector

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64


def hnswlib_available() -> bool:
    return importlib.util.find_spec("hnswlib") is not None


class HnswGraph:
    """hnswlib index with string ids; deleted slots are reused by later adds."""

    def __init__(self, dim: int, capacity: int) -> None:
        import hnswlib

        self.index: Any = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(
            max_elements=max(capacity, 16),
            ef_construction=HNSW_EF_CONSTRUCTION,
            M=HNSW_M,
            allow_replace_deleted=True,
        )
        self.index.set_ef(HNSW_EF_SEARCH)
        self.labels: dict[str, int] = {}
        self.ids: dict[int, str] = {}
        self._next_label = 0
        self._deleted = 0

    def __len__(self) -> int:
        return len(self.labels)

    def add_many(self, entry_ids: Sequence[str], vectors: Matrix) -> None:
        """Bulk insert (the build): one call, hnswlib's own threads."""
        for entry_id in entry_ids:
            self.remove(entry_id)
        labels = np.arange(self._next_label, self._next_label + len(entry_ids))
        self._next_label += len(entry_ids)
        self._reserve(len(entry_ids))
        self.index.add_items(vectors, labels, num_threads=1)
        for entry_id, label in zip(entry_ids, labels.tolist(), strict=True):
            self.labels[entry_id] = label
            self.ids[label] = entry_id

    def add(self, entry_id: str, vector: Vector) -> None:
        self.remove(entry_id)
        label = self._next_label
        self._next_label += 1
        reuse = self._deleted > 0
        if not reuse:
            self._reserve(1)
        self.index.add_items(vector[None, :], [label], replace_deleted=reuse)
        if reuse:
            self._deleted -= 1
        self.labels[entry_id] = label
        self.ids[label] = entry_id

    def remove(self, entry_id: str) -> None:
        label = self.labels.pop(entry_id, None)
        if label is not None:
            del self.ids[label]
            self.index.mark_deleted(label)
            self._deleted += 1

    def _reserve(self, extra: int) -> None:
        need = self.index.get_current_count() + extra
        capacity = self.index.get_max_elements()
        if need > capacity:
            self.index.resize_index(max(need, capacity * 2))

    def search(self, vector: Vector, k: int) -> list[tuple[str, float]]:
        k = min(k, len(self.labels))
        if k <= 0:
            return []
        labels, distances = self.index.knn_query(vector, k=k)
        return [
            (self.ids[int(label)], 1.0 - float(dist))
            for label, dist in zip(labels[0], distances[0], strict=True)
            if int(label) in self.ids
        ]

    def memory_bytes(self) -> int:
        """Vectors plus links (M*2 on layer 0) plus label lists, as hnswlib allocates them."""
        capacity = int(self.index.get_max_elements())
        per_element = int(self.index.dim) * 4 + HNSW_M * 2 * 4 + 4 + 8 + 8
        return capacity * per_element + 200 * len(self.labels)


class GraphBuild:
    """Builds a graph from a snapshot in a thread, replaying the changes queued meanwhile."""

    def __init__(
        self, dim: int, entry_ids: Sequence[str], vectors: Matrix, logger: logging.Logger
    ) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Vector | None]] = []
        self._graph: HnswGraph | None = None
        self.failed = False
        self._logger = logger
        self._thread = threading.Thread(
            target=self._run,
            args=(dim, list(entry_ids), vectors.copy()),
            name="hnsw-build",
            daemon=True,  # a half-built graph is worthless at exit
        )
        self._thread.start()

    def _run(self, dim: int, entry_ids: list[str], vectors: Matrix) -> None:
        try:
            graph = HnswGraph(dim, capacity=len(entry_ids) * 2)
            graph.add_many(entry_ids, vectors)
            while True:
                with self._lock:
                    ops, self._pending = self._pending, []
                    if not ops:
                        self._graph = graph
                        return
                for entry_id, vector in ops:
                    if vector is None:
                        graph.remove(entry_id)
                    else:
                        graph.add(entry_id, vector)
        except Exception:
            self._logger.exception("cache: HNSW build failed; the partition stays exact")
            self.failed = True

    def ready(self) -> HnswGraph | None:
        """The finished graph, once every queued change is in it."""
        return self._graph

    def record(self, entry_id: str, vector: Vector | None) -> HnswGraph | None:
        """Queues a change (None = removal); returns the graph if it went live meanwhile."""
        with self._lock:
            if self._graph is None:
                self._pending.append((entry_id, vector))
                return None
            return self._graph
