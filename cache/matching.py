"""Finds the semantic-match verifier (guard) and the default threshold, wherever they live.

The guard decides whether a cached question's answer may serve a new question that is
merely similar; until one is installed every candidate above the threshold is allowed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable

Guard = Callable[[str, str], "bool | Awaitable[bool]"]

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


async def guard_allows(guard: Guard, cached_question: str, new_question: str) -> bool:
    """Calls a sync or async guard."""
    verdict = guard(cached_question, new_question)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)
