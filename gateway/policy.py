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


# Why a choice may end and still be a complete answer worth replaying. Anything else (the
# upstream's content filter, an abort, a reason a server made up) is not stored.
_COMPLETE = frozenset({"stop", "length", "tool_calls", "function_call"})


def unstorable_reason(answer: dict[str, Any]) -> str | None:
    """Why an answer the upstream gave must not be cached, or None when it may be.

    A choice cut by `max_tokens` with text is what the same request gets again, so it is
    kept (the limit is part of the key); one cut before any output is an empty answer.
    """
    choices = answer.get("choices")
    if "error" in answer or not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict):
            return "a choice is not an object"
        reason = choice.get("finish_reason")
        if reason not in _COMPLETE:
            return f"finish_reason {reason!r}"
        if reason == "length" and not _has_output(choice):
            return "cut by max_tokens before any output"
    return None


def _has_output(choice: dict[str, Any]) -> bool:
    if "message" in choice:
        message = choice.get("message") or {}
        return bool(message.get("content") or message.get("tool_calls"))
    return bool(choice.get("text"))
