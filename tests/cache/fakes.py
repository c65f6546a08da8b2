"""Small deterministic stand-ins for the embedding model."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Sequence

import numpy as np

from cache.embedder import Matrix, Vector
from cache.semantic.language import Route
from cache.semantic.verifier import Verdict

DIM = 64


def bag_of_words(text: str, dim: int = DIM) -> Vector:
    """Same words, same vector: reordering a question keeps similarity 1."""
    v = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


class FakeEmbedder:
    """An Embedder whose similarity is word overlap."""

    dim = DIM

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, text: str) -> Vector:
        self.calls += 1
        return bag_of_words(text)


class CountingEncoder:
    """An Encoder that records each batch it is given and can be held shut by an event."""

    dim = DIM

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts: Sequence[str]) -> Matrix:
        self.gate.wait(5)
        self.batches.append(list(texts))
        return np.stack([bag_of_words(t) for t in texts])


class OpenGate:
    """A language gate that lets every question be matched by meaning, for tests of the rest."""

    def route(self, text: str) -> Route:
        return Route("any", "fake")


class CollapsingEmbedder:
    """The worst embedder: every text gets the same vector (cosine 1.0 with everything)."""

    dim = DIM

    async def embed(self, text: str) -> Vector:
        v = np.zeros(DIM, dtype=np.float32)
        v[0] = 1.0
        return v


class DecidingVerifier:
    """A verifier that asks a plain function `(cached, new) -> bool`, for tests of the cache;
    `calls` holds the cached questions of each call."""

    def __init__(self, decide: Callable[[str, str], bool], similarity_threshold: float = 0.5):
        self.decide = decide
        self.similarity_threshold = similarity_threshold
        self.calls: list[list[str]] = []

    async def verify(
        self,
        cached_questions: Sequence[str],
        new_question: str,
        *,
        similarities: Sequence[float],
        language: str,
    ) -> list[Verdict]:
        self.calls.append(list(cached_questions))
        return [Verdict(self.decide(cached, new_question)) for cached in cached_questions]
