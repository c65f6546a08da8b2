"""Gateway configuration: one settings object, read once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cache.embedder import EncoderBackend


class GatewaySettings(BaseSettings):
    """Every gateway setting; env `SLUICE_GATEWAY_<NAME>`, flag `--<name>` (dashes)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, description="Port to listen on.")
    upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8001"],
        description="Comma-separated OpenAI-compatible base URLs (our backend, vLLM, ...).",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SLUICE_GATEWAY_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis URL (also read from REDIS_URL); unset = embedded in-process Redis.",
    )
    api_keys: str | None = Field(
        default=None,
        description="Comma-separated KEY=TENANT items, each optionally followed by the "
        "tenant's semantic=off, semantic_threshold=X, rpm=N, tpm=N and concurrency=N; unset "
        "with no keys file = open.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of KEY=TENANT lines (# comments; the same options as api_keys); "
        "merged with api_keys.",
    )
    admin_token: str | None = Field(
        default=None, description="Bearer token for /admin routes; unset = admin routes refuse all."
    )
    default_tenant: str = Field(
        default="default", description="Tenant of every request in open mode."
    )
    tenant_rpm: int | None = Field(
        default=None,
        gt=0,
        description="Requests per minute per tenant, cache hits included (429 past it), unless "
        "its key line says rpm=N; unset = no limit.",
    )
    tenant_tpm: int | None = Field(
        default=None,
        gt=0,
        description="Upstream tokens per minute per tenant (the usage of upstream answers; "
        "cache hits cost none), unless its key line says tpm=N; unset = no limit.",
    )
    tenant_concurrency: int | None = Field(
        default=None,
        gt=0,
        description="Upstream calls in progress per tenant, all replicas, unless its key line "
        "says concurrency=N; unset = no limit.",
    )
    concurrency_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A concurrency slot not renewed for this long is freed (a replica that "
        "died holding it); live replicas renew theirs every third of it.",
    )
    max_body_bytes: int = Field(default=1_048_576, description="Larger request bodies get 413.")
    upstream_api_key: str | None = Field(
        default=None,
        description="Sent to upstreams as Authorization: Bearer (vllm serve --api-key, hosted "
        "servers); clients' own keys are never forwarded.",
    )
    connect_timeout_s: float = Field(default=2.0, description="Upstream connect timeout.")
    upstream_timeout_s: float = Field(default=300.0, description="Upstream read timeout per chunk.")
    max_connections: int = Field(
        default=256, description="Pooled upstream connections, all upstreams."
    )
    cache_ttl_s: int = Field(default=86_400, description="Default lifetime of a cached answer.")
    max_ttl_s: int = Field(default=30 * 86_400, description="Cap on a per-request x-cache-ttl.")
    semantic: bool = Field(default=True, description="Look up paraphrases (semantic cache).")
    semantic_threshold: float | None = Field(
        default=None,
        description="Cosine similarity needed for a semantic hit; unset = cache default.",
    )
    semantic_hit_log_size: int = Field(
        default=1000,
        description="Semantic hits kept per tenant in Redis (both questions' text) for review "
        "and wrong reports at /admin/semantic-hits; 0 keeps none.",
    )
    semantic_hit_log_ttl_s: int = Field(
        default=7 * 86_400, description="Longest a logged semantic hit is kept."
    )
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers model path; unset = all-MiniLM-L6-v2."
    )
    embed_backend: EncoderBackend = Field(
        default="auto",
        description="Embedding runtime: auto (onnx-int8 on CPUs with VNNI, AMX or Arm dot "
        "product, else onnx), onnx (ONNX Runtime, fp32, exported once from the model folder), "
        "onnx-int8 (int8 products: half the CPU, vectors within 0.99 of fp32) or torch.",
    )
    embed_cache_dir: Path | None = Field(
        default=None,
        description="Where the ONNX export is kept between starts; unset = "
        "~/.cache/sluice/embedders.",
    )
    verifier_cache_dir: Path | None = Field(
        default=None,
        description="Where the trained semantic verifier is kept (trained on first start if "
        "missing, a few minutes); unset = ~/.cache/sluice/verifiers.",
    )
    embed_threads: int | None = Field(
        default=None,
        description="CPU threads for embedding; unset = 2 for the onnx runtimes (their idle "
        "threads never spin), 1 for torch (slow on shared cores with more).",
    )
    embed_timeout_s: float = Field(
        default=1.0, description="A semantic lookup waiting longer for its embedding misses."
    )
    cache_max_entries: int | None = Field(
        default=None, description="Entries kept per tenant (LRU out); unset = cache default."
    )
    cache_key_prefix: str = Field(
        default="sluice", description="Prefix of every Redis key (deployments sharing a Redis)."
    )
    redis_timeout_s: float = Field(
        default=0.25,
        description="Time limit of one Redis operation on the request path; past it that "
        "request misses (goes upstream), and once Redis has answered nothing for three times "
        "this long the cache counts as down for a moment.",
    )
    redis_max_connections: int = Field(
        default=1024, description="Connections to Redis this process may hold at once."
    )
    cache_timeout_s: float = Field(
        default=2.0, description="Longest wait for a cache lookup before going upstream."
    )
    speculative_upstream: bool = Field(
        default=True,
        description="On an exact miss, call upstream while the semantic lookup runs and drop "
        "the call on a semantic hit: misses don't wait for the embedding. Turn off when the "
        "upstream bills for calls dropped before they finish.",
    )
    cache_sampled: bool = Field(
        default=False,
        description="Also cache requests sampled (temperature > 0 or unset) without a seed; "
        "off: they bypass, so a regenerate gets a new answer.",
    )
    upstream_stream_usage: bool = Field(
        default=True,
        description="Ask upstreams for usage in streams (stripped unless the client asked).",
    )
    log_bodies: bool = Field(
        default=False, description="Log prompt and answer text (off: never logged)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split_upstreams(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [str(url).rstrip("/") for url in value]
        return value
