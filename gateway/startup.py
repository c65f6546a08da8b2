"""The gateway's start-up checks: a Redis that does not answer is named, with its fix, before
the gateway loads its embedder and long before a client would meet a cache that fails open."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from backend.errors import StartupError
from cache.errors import ConfigError
from cache.redis_client import connect_redis

REDIS_FIX = (
    "Start Redis there, or point --redis-url (or REDIS_URL) at one that runs; "
    "unset both to use the embedded in-process Redis"
)


def redacted(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


async def _ping(url: str, timeout_s: float) -> None:
    client = connect_redis(url, timeout_s=timeout_s)
    try:
        async with asyncio.timeout(timeout_s * 2):
            await client.ping()
    finally:
        await client.aclose()


def check_redis(url: str | None, *, timeout_s: float = 2.0) -> None:
    """Raises StartupError unless the Redis at `url` answers PING (None: the embedded one)."""
    if url is None:
        return
    try:
        asyncio.run(_ping(url, timeout_s))
    except ConfigError as exc:
        raise StartupError(
            f"the Redis URL {redacted(url)} is not usable: {exc}", REDIS_FIX
        ) from None
    except TimeoutError:
        raise StartupError(
            f"Redis at {redacted(url)} did not answer within {timeout_s * 2:g} s", REDIS_FIX
        ) from None
    except Exception as exc:  # redis-py's ConnectionError, AuthenticationError, ResponseError...
        reason = str(exc).strip() or type(exc).__name__
        raise StartupError(f"cannot reach Redis at {redacted(url)} ({reason})", REDIS_FIX) from None
