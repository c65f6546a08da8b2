"""In-process nearest-neighbour search, partitioned by scope so a query only meets its peers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cache.embedder import Vector


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
        sims = self.matrix[:n] @ vector
        sims[self.expires[:n] <= now] = -np.inf
        top = np.argpartition(-sims, k - 1)[:k] if n > k else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [Neighbour(self.ids[i], float(sims[i])) for i in top if sims[i] >= min_similarity]

    def memory_bytes(self) -> int:
        ids = sum(49 + len(i) for i in self.ids)  # str objects; dict/list slots roughly double it
        return int(self.matrix.nbytes + self.expires.nbytes + 2 * ids + 100 * len(self.ids))


class ScopedIndex:
    """Exact (numpy) search inside each scope's partition.

    Most scopes are small (one conversation prefix, one system prompt), so an exact dot
    product over the partition is cheaper than maintaining a graph; see docs/cache.md.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._partitions: dict[str, _ExactPartition] = {}
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
            part = self._partitions[scope] = _ExactPartition(self.dim)
        part.add(entry_id, np.asarray(vector, dtype=np.float32), expires_at)
        self._scope_of[entry_id] = scope

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
