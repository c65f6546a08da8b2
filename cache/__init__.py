"""Sluice cache: exact and semantic response caches on Redis. Knows nothing of HTTP."""
