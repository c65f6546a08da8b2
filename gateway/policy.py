"""What the cache may do for one request: from its headers and its sampling parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

TTL_HEADER = "x-cache-ttl"


@dataclass(frozen=True, kw_only=True, slots=True)
class CachePolicy:
    """Per-request cache behaviour from `Cache-Control` and `x-cache-ttl`."""

    lookup: bool = True
    store: bool = True
    ttl_s: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, max_ttl_s: int) -> CachePolicy:
        """`no-cache`: answer fresh but store it; `no-store`: don't store; TTL from the header."""
        directives = {
            part.strip().split("=", 1)[0].lower()
            for part in headers.get("cache-control", "").split(",")
            if part.strip()
        }
        ttl: int | None = None
        raw_ttl = headers.get(TTL_HEADER)
        if raw_ttl is not None:
            try:
                ttl = int(raw_ttl)
            except ValueError:
                raise BadRequest(f"{TTL_HEADER} must be a whole number of seconds.") from None
            if ttl <= 0:
                raise BadRequest(f"{TTL_HEADER} must be positive.")
            ttl = min(ttl, max_ttl_s)
        return cls(
            lookup="no-cache" not in directives, store="no-store" not in directives, ttl_s=ttl
        )


def uncacheable_reason(endpoint: str, body: dict[str, Any], *, cache_sampled: bool) -> str | None:
    """Why this request bypasses the cache, or None when it can be cached."""
    if endpoint == "completion" and not isinstance(body.get("prompt"), str):
        return "prompt is not a single string"
    if not cache_sampled and is_sampled(body) and body.get("seed") is None:
        return "sampled without a seed"
    return None


def is_sampled(body: dict[str, Any]) -> bool:
    """Whether the answer is a random draw: temperature above 0, or unset (OpenAI's default
    is 1). Temperature 0 is greedy decoding, which `top_p` does not make random; with any
    temperature above 0 the draw is random whatever `top_p` is."""
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return True  # null or not a number: the upstream's default, which samples
    return temperature > 0
