"""Micro-batching of embeddings, and the real all-MiniLM-L6-v2 model behind the cache."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cache.embedder import MicroBatchEmbedder, SentenceTransformerEncoder
from cache.matching import allow_all, default_guard
from cache.response_cache import ResponseCache
from tests.cache.conftest import answer, chat
from tests.cache.fakes import CountingEncoder, bag_of_words


async def test_concurrent_embeds_share_one_encode_call() -> None:
    encoder = CountingEncoder()
    async with MicroBatchEmbedder(encoder, max_batch_size=64) as embedder:
        encoder.gate.clear()  # hold the first batch so the others queue up behind it
        first = asyncio.create_task(embedder.embed("first"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(embedder.embed(f"text {i}")) for i in range(10)]
        await asyncio.sleep(0.05)
        encoder.gate.set()
        vectors = await asyncio.gather(first, *rest)
    assert [len(b) for b in encoder.batches] == [1, 10]
    assert np.allclose(vectors[3], bag_of_words("text 2"))


async def test_batches_respect_the_size_limit() -> None:
    encoder = CountingEncoder()
    async with MicroBatchEmbedder(encoder, max_batch_size=4) as embedder:
        encoder.gate.clear()
        tasks = [asyncio.create_task(embedder.embed(str(i))) for i in range(9)]
        await asyncio.sleep(0.05)
        encoder.gate.set()
        await asyncio.gather(*tasks)
    assert max(len(b) for b in encoder.batches) <= 4
    assert sum(len(b) for b in encoder.batches) == 9


async def test_encoder_failure_reaches_every_caller() -> None:
    class Broken(CountingEncoder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("model crashed")

    async with MicroBatchEmbedder(Broken()) as embedder:
        results = await asyncio.gather(
            embedder.embed("a"), embedder.embed("b"), return_exceptions=True
        )
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_embed_outside_context_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        await MicroBatchEmbedder(CountingEncoder()).embed("x")


@pytest.mark.slow
def test_real_model_paraphrase_is_closer_than_unrelated(
    st_encoder: SentenceTransformerEncoder,
) -> None:
    v = st_encoder.encode(
        ["How do I reset my password?", "How can I change my password?", "Best pizza in Naples"]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]


@pytest.mark.slow
async def test_semantic_lookup_with_real_embeddings_and_installed_guard(
    st_encoder: SentenceTransformerEncoder,
) -> None:
    if default_guard() is allow_all:
        pytest.skip("no guard installed (cache/guard.py)")
    async with ResponseCache(None, embedder=MicroBatchEmbedder(st_encoder)) as cache:
        await cache.store("ns", "chat", chat("How do I reset my password?"), answer("Forgot"))
        await cache.store("ns", "chat", chat("Cheap flights to Paris in May"), answer("Paris"))
        hit = await cache.lookup("ns", "chat", chat("how do i reset my password"))
        assert hit is not None and hit.kind == "semantic" and hit.similarity is not None
        assert await cache.lookup("ns", "chat", chat("Cheap flights to Lyon in May")) is None
        assert await cache.lookup("ns", "chat", chat("What is the weather in Oslo?")) is None
