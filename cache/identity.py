"""A request's identity for the cache, made once per request.

Single-flight, the exact lookup, the semantic lookup and the store after a miss all need the
same facts about a request: its exact key, its scope and question. Each is cut from the
canonical form (cache/keys.py), which walks the whole conversation and is the costly part,
so the gateway makes one `RequestIdentity` per request and hands it to each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from cache.keys import canonical_request, digest, model_of, namespace_hash
from cache.scope import SemanticQuery, semantic_query

Endpoint = Literal["chat", "completion"]
QUESTION_LISTING_CHARS = 500


@dataclass(frozen=True, kw_only=True)
class RequestIdentity:
    """What the cache knows a request by: namespace, exact key, model, scope and question.

    Make it with `identify`; the scope and question are cut from the canonical form on
    first use only (an exact hit never needs them).
    """

    namespace: str
    endpoint: Endpoint
    body: dict[str, Any] = field(repr=False, compare=False)
    canonical: dict[str, Any] = field(repr=False, compare=False)
    namespace_hash: str
    key_hash: str
    model: str

    @property
    def entry_id(self) -> str:
        """The id of the exact entry this request is stored under."""
        return f"{self.namespace_hash}.{self.key_hash}"

    @cached_property
    def query(self) -> SemanticQuery | None:
        """Question and scope for matching by meaning, or None when the request has no
        single plain-text question (the language gate narrows the scope later)."""
        return semantic_query(self.namespace, self.endpoint, self.body, canonical=self.canonical)


def identify(namespace: str, endpoint: Endpoint, body: dict[str, Any]) -> RequestIdentity:
    """The request's identity: canonicalised once; its exact key is the hash of that form."""
    canonical = canonical_request(namespace, endpoint, body)
    return RequestIdentity(
        namespace=namespace,
        endpoint=endpoint,
        body=body,
        canonical=canonical,
        namespace_hash=namespace_hash(namespace),
        key_hash=digest(canonical),
        model=model_of(body),
    )


def question_text(endpoint: str, body: dict[str, Any]) -> str:
    """A short text for entry listings when the request has no semantic question."""
    if endpoint == "completion":
        prompt = body.get("prompt")
        return prompt[:QUESTION_LISTING_CHARS] if isinstance(prompt, str) else ""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        if isinstance(content, str):
            return content[:QUESTION_LISTING_CHARS]
    return ""
