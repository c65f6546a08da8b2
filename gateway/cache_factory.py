"""Builds the real Redis-backed ResponseCache from the gateway's settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cache.embedder import MicroBatchEmbedder, load_encoder, resolve_backend
from cache.redis_client import connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.language import english_gate
from cache.semantic.small_talk import load_small_talk
from cache.semantic.verifier import load_verifier
from gateway.services import Cache
from gateway.settings import GatewaySettings

log = logging.getLogger("sluice.gateway")


@asynccontextmanager
async def open_response_cache(settings: GatewaySettings) -> AsyncIterator[Cache]:
    """Connects to Redis (or the embedded one), loads the embedder, opens the cache."""
    embedder = None
    language_gate = None
    verifier = None
    small_talk = None
    if settings.semantic:
        backend = resolve_backend(settings.embed_backend)
        log.info(
            "loading the embedding model for the semantic cache (%s, threads: %s)",
            backend,
            settings.embed_threads or "default",
        )
        # Concurrent lookups are batched by the embedder; thread defaults per runtime are in
        # cache/embedder.py. Loading (a first start also exports to ONNX) takes seconds to a
        # minute, off the event loop.
        encoder = await asyncio.to_thread(
            load_encoder,
            backend,
            settings.embedding_model,
            threads=settings.embed_threads,
            cache_dir=settings.embed_cache_dir,
        )
        embedder = MicroBatchEmbedder(encoder)
        # Questions in languages the embedder was not measured for get exact caching only.
        language_gate = await asyncio.to_thread(english_gate, settings.embedding_model)
        # The trained verifier decides each candidate; a first start trains it (minutes).
        verifier = await asyncio.to_thread(load_verifier, settings.verifier_cache_dir)
        # Trained with it: finds small talk in histories, left out of the semantic scope.
        small_talk = await asyncio.to_thread(load_small_talk, settings.verifier_cache_dir)
    options: dict[str, Any] = {}
    if settings.cache_max_entries is not None:
        options["max_entries_per_namespace"] = settings.cache_max_entries
    redis = (
        connect_redis(settings.redis_url, max_connections=settings.redis_max_connections)
        if settings.redis_url
        else None
    )
    if redis is None:
        log.info("no REDIS_URL: using the embedded in-process Redis (entries end with the process)")
    cache = ResponseCache(
        redis,
        embedder=embedder,
        key_prefix=settings.cache_key_prefix,
        default_ttl_s=settings.cache_ttl_s,
        similarity_threshold=settings.semantic_threshold,
        semantic_enabled=settings.semantic,
        op_timeout_s=settings.redis_timeout_s,
        embed_timeout_s=settings.embed_timeout_s,
        language_gate=language_gate,
        verifier=verifier,
        small_talk=small_talk,
        hit_log_size=settings.semantic_hit_log_size,
        hit_log_ttl_s=settings.semantic_hit_log_ttl_s,
        **options,
    )
    try:
        async with cache:
            yield cache
    finally:
        if redis is not None:
            await redis.aclose()
