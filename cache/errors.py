"""Errors raised by the cache package (Redis trouble is never raised: the cache fails open)."""

from __future__ import annotations


class CacheError(Exception):
    """Base class for every error the cache package raises."""


class ConfigError(CacheError):
    """A cache setting (Redis URL, model path, threshold) cannot be used."""


class RedisUnavailable(CacheError):
    """An admin write could not reach Redis (request-path calls fail open instead)."""
