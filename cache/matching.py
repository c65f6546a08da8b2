"""Finds the semantic-match verifier (guard) and the default threshold, wherever they live.

The guard decides whether a cached question's answer may serve a new question that is
merely similar; until one is installed every candidate above the threshold is allowed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable

# Called as guard(cached_question, new_question), plus `similarity=` when it accepts that.
Guard = Callable[..., "bool | Awaitable[bool]"]

# Used only when no tuned default is installed (see cache/semantic_defaults.py or cache/guard.py).
FALLBACK_SIMILARITY_THRESHOLD = 0.9
GUARD_MODULES = ("cache.guard",)
THRESHOLD_MODULES = ("cache.semantic_defaults", "cache.guard")


def allow_all(cached_question: str, new_question: str) -> bool:
    """The placeholder guard: similarity alone decides."""
    return True


def default_guard() -> Guard:
    """`guard_allows(cached_question, new_question)` from cache.guard, or `allow_all`."""
    for name in GUARD_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        guard = getattr(module, "guard_allows", None)
        if callable(guard):
            return guard  # type: ignore[no-any-return]
    return allow_all


def default_similarity_threshold() -> float:
    """The tuned DEFAULT_SIMILARITY_THRESHOLD, or the fallback when none is installed."""
    for name in THRESHOLD_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        value = getattr(module, "DEFAULT_SIMILARITY_THRESHOLD", None)
        if isinstance(value, int | float):
            return float(value)
    return FALLBACK_SIMILARITY_THRESHOLD


def takes_similarity(guard: Guard) -> bool:
    """Whether the guard wants the candidate's cosine similarity as `similarity=`."""
    try:
        parameters = inspect.signature(guard).parameters
    except (TypeError, ValueError):
        return False
    return "similarity" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


async def guard_allows(
    guard: Guard,
    cached_question: str,
    new_question: str,
    *,
    similarity: float | None = None,
) -> bool:
    """Calls a sync or async guard, with the similarity when it takes one."""
    if similarity is not None:
        verdict = guard(cached_question, new_question, similarity=similarity)
    else:
        verdict = guard(cached_question, new_question)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)
