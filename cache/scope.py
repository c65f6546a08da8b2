"""Semantic scope: a semantic match is only allowed between requests whose context is identical.

The scope hash covers namespace, endpoint, model, every message before the last user turn
and every output-affecting parameter; only the last user message is compared by meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache.keys import canonical_request, digest


@dataclass(frozen=True, kw_only=True)
class SemanticQuery:
    """What the semantic cache compares: the question, within its scope."""

    scope: str
    question: str
    language: str = ""  # set once the language gate has read the question


def _text_of(content: Any) -> str | None:
    """Plain text of a message's content, or None when it holds anything but text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    return None


def semantic_query(
    namespace: str,
    endpoint: str,
    body: dict[str, Any],
    *,
    canonical: dict[str, Any] | None = None,
) -> SemanticQuery | None:
    """The question and scope of a request, or None when it cannot be matched by meaning.

    `canonical` is `canonical_request(namespace, endpoint, body)` when the caller has it
    already (for the exact key): the scope is then cut out of it instead of canonicalising
    the whole conversation again.
    """
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            return None
        question = _text_of(last.get("content"))
    elif endpoint == "completion":
        question = body.get("prompt") if isinstance(body.get("prompt"), str) else None
    else:
        return None
    if question is None or not question.strip():
        return None
    if canonical is None:
        canonical = canonical_request(namespace, endpoint, body)
    return SemanticQuery(scope=scope_of(endpoint, canonical), question=question.strip())


def scope_of(endpoint: str, canonical: dict[str, Any], skip: frozenset[int] = frozenset()) -> str:
    """The scope hash of a canonical request, leaving out the history messages at the
    indices in `skip` (small-talk exchanges, cache/semantic/small_talk.py)."""
    return digest(["scope", _context(endpoint, canonical, skip)])


def _context(endpoint: str, canonical: dict[str, Any], skip: frozenset[int]) -> dict[str, Any]:
    """The canonical request without the question: the last message's content (its other
    fields, its `name` say, still belong to the scope) or the completion's prompt.

    Equal to canonicalising the body with the question left out, since canonical forms are
    built field by field (tests/cache/test_keys.py checks it).
    """
    if endpoint == "chat":
        messages = canonical["messages"]
        last = {k: v for k, v in messages[-1].items() if k != "content"}
        history = [m for i, m in enumerate(messages[:-1]) if i not in skip]
        return {**canonical, "messages": [*history, last]}
    params = {k: v for k, v in canonical["params"].items() if k != "prompt"}
    return {**canonical, "params": params}
