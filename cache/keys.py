"""Exact-cache keys: a hash of the canonical form of everything that changes the answer.

Conservative by design: every request field counts unless it is known not to change the
answer, so a new OpenAI parameter can cost a hit but never serve a wrong one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
from typing import Any

# Request fields that never change the model's output.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "request_id",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    }
)

NAMESPACE_HASH_CHARS = 16
KEY_HASH_CHARS = 32


def canonical_value(value: Any) -> Any:
    """JSON values in normal form: nulls dropped from objects, integral floats as ints."""
    if isinstance(value, dict):
        return {str(k): canonical_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def canonical_content(content: Any) -> Any:
    """A single text part means the same as the plain string; several stay a list of texts,
    so parts split differently (which the upstream sees differently) never share a key."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        texts = [p["text"] for p in content]
        return texts[0] if len(texts) == 1 else texts
    return canonical_value(content)


def canonical_tool_calls(tool_calls: Any) -> Any:
    """Tool-call arguments are JSON text: their whitespace and key order do not count."""
    if not isinstance(tool_calls, list):
        return canonical_value(tool_calls)
    out = []
    for call in tool_calls:
        call = canonical_value(call)
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            with contextlib.suppress(ValueError):
                function["arguments"] = canonical_value(json.loads(function["arguments"]))
        out.append(call)
    return out


def canonical_message(message: Any) -> Any:
    """Role, content, name, tool calls and any other field a message carries."""
    if not isinstance(message, dict):
        return canonical_value(message)
    out = canonical_value({k: v for k, v in message.items() if k not in ("content", "tool_calls")})
    if message.get("content") is not None:
        out["content"] = canonical_content(message["content"])
    if message.get("tool_calls") is not None:
        out["tool_calls"] = canonical_tool_calls(message["tool_calls"])
    return out


def canonical_request(namespace: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a request that decide its answer, in a normal form."""
    fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    messages = fields.pop("messages", None)
    canon: dict[str, Any] = {
        "namespace": namespace,
        "endpoint": endpoint,
        "params": canonical_value(fields),
    }
    if messages is not None:
        canon["messages"] = (
            [canonical_message(m) for m in messages]
            if isinstance(messages, list)
            else canonical_value(messages)
        )
    return canon


def digest(obj: Any, chars: int = KEY_HASH_CHARS) -> str:
    """Stable hex digest of a JSON value."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def exact_key(
    namespace: str,
    endpoint: str,
    body: dict[str, Any],
    *,
    canonical: dict[str, Any] | None = None,
) -> str:
    """The exact-cache key hash of a request (`canonical`: its canonical_request, if made)."""
    if canonical is None:
        canonical = canonical_request(namespace, endpoint, body)
    return digest(canonical)


@functools.lru_cache(maxsize=4096)
def namespace_hash(namespace: str) -> str:
    """Key names carry this hash, never the tenant's name (remembered: few tenants, every
    request)."""
    return digest(["namespace", namespace], NAMESPACE_HASH_CHARS)


def model_of(body: dict[str, Any]) -> str:
    """The requested model name, as a string."""
    model = body.get("model")
    return model if isinstance(model, str) else ""
