"""The gateway's start-up checks: bad settings, unreadable API keys and a Redis that does not
answer are named, with their fix, before the gateway loads its embedder and long before a
client would meet a cache that fails open."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from backend.errors import StartupError
from cache.errors import ConfigError
from cache.redis_client import connect_redis
from gateway.auth import Authenticator, load_keys, load_tenant_settings
from gateway.settings import GatewaySettings

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
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
        raise StartupError(f"cannot reach Redis at {redacted(url)} ({reason})", REDIS_FIX) from None


def load_settings(given: dict[str, Any]) -> GatewaySettings:
    """Settings from the environment and the flags given, or a StartupError naming each bad
    one by its flag and its variable."""
    try:
        return GatewaySettings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(
                f"--{name.replace('_', '-')} / SLUICE_GATEWAY_{name.upper()}: {error['msg']}"
            )
        raise StartupError(
            "invalid settings: " + "; ".join(problems), "Fix the flag or the variable named"
        ) from None


def check_keys(*, inline: str | None, path: Path | None, admin_token: str | None = None) -> None:
    """Raises StartupError when the API keys cannot be read or parsed, or one of them is the
    admin token (never quoting a key)."""
    try:
        keys = load_keys(inline=inline, path=path)
        load_tenant_settings(inline=inline, path=path)
    except OSError as exc:
        raise StartupError(
            f"cannot read the API keys file {path} ({exc.strerror})",
            "Point --api-keys-file (SLUICE_GATEWAY_API_KEYS_FILE) at a readable file",
        ) from None
    except ValueError as exc:
        raise StartupError(
            f"the API keys are not valid: {exc}",
            "Fix that entry in --api-keys (SLUICE_GATEWAY_API_KEYS) or in the keys file",
        ) from None
    try:
        Authenticator(keys, admin_token=admin_token)
    except ValueError as exc:
        raise StartupError(
            str(exc), "Set --admin-token (SLUICE_GATEWAY_ADMIN_TOKEN) to a value no API key has"
        ) from None


def check_embedding_model(model: str | None, *, semantic: bool) -> None:
    """Refuses an embedding model that names a local folder which is not there or holds no
    sentence-transformers model, before the lifespan would fail on it with a traceback."""
    if not semantic or model is None:
        return
    path = Path(model).expanduser()
    if not (model.startswith(("/", ".", "~")) or path.exists()):
        return  # a hub id: left to sentence-transformers
    fix = (
        "Pass --embedding-model a sentence-transformers model folder, leave it unset for "
        "all-MiniLM-L6-v2, or turn the semantic cache off with --no-semantic"
    )
    if not path.is_dir():
        raise StartupError(f"embedding model folder {model} does not exist", fix)
    if not any((path / name).is_file() for name in ("modules.json", "config.json")):
        raise StartupError(
            f"embedding model folder {model} holds no modules.json or config.json", fix
        )
