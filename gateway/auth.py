"""API keys to tenant namespaces (with each tenant's semantic settings and rate limits), and
the admin token."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import Unauthorized
from gateway.limits import TenantLimits

_SWITCH = {"on": True, "true": True, "off": False, "false": False}
KEY_ENTRY_FORM = (
    "KEY=TENANT [semantic=on|off] [semantic_threshold=X] [rpm=N] [tpm=N] [concurrency=N]"
)
LIMIT_OPTIONS = ("rpm", "tpm", "concurrency")


@dataclass(frozen=True, kw_only=True)
class TenantSettings:
    """A tenant's own settings, given on its key lines (None: the gateway's).

    The semantic ones can only narrow the gateway's: semantic matching off where the gateway
    has it on, a similarity threshold above the gateway's (a lower one changes nothing). The
    limits (requests and upstream tokens per minute, concurrent upstream calls) replace the
    gateway's defaults, higher or lower.
    """

    semantic: bool | None = None
    semantic_threshold: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def limits(self) -> TenantLimits:
        return TenantLimits(rpm=self.rpm, tpm=self.tpm, concurrency=self.concurrency)


def _option(option: str) -> tuple[str, bool | float | int]:
    name, _, value = option.partition("=")
    if name == "semantic" and value.lower() in _SWITCH:
        return name, _SWITCH[value.lower()]
    if name == "semantic_threshold":
        with contextlib.suppress(ValueError):
            if 0.0 < (threshold := float(value)) <= 1.0:
                return name, threshold
    if name in LIMIT_OPTIONS and value.isascii() and value.isdigit() and int(value) > 0:
        return name, int(value)
    raise ValueError(
        f"API key option {option!r}: expected semantic=on|off, semantic_threshold=X "
        "with 0 < X <= 1, or rpm=N, tpm=N, concurrency=N with N a whole number above 0"
    )


def _entries(lines: Iterable[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(key, tenant, options) of each `KEY=TENANT [options]` item (blanks and `#` comments
    skipped). Error messages never quote the key."""
    for raw in lines:
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        key, sep, rest = item.partition("=")
        tenant, *options = rest.split() or [""]
        key = key.strip()
        if not sep or not key or not tenant or any(c.isspace() for c in key):
            raise ValueError(f"API key entries must look like {KEY_ENTRY_FORM}")
        yield key, tenant, dict(_option(option) for option in options)


def parse_key_pairs(lines: Iterable[str]) -> dict[str, str]:
    """Reads `KEY=TENANT` items (blank items and `#` comments skipped; options ignored)."""
    return {key: tenant for key, tenant, _ in _entries(lines)}


def _key_lines(inline: str | None, path: Path | None) -> list[str]:
    """The keys file's lines, then the environment's items (which win for a repeated key)."""
    lines = path.read_text().splitlines() if path is not None else []
    return lines + (inline.split(",") if inline else [])


def load_keys(*, inline: str | None, path: Path | None) -> dict[str, str]:
    """Merges keys from the environment string and the keys file."""
    return parse_key_pairs(_key_lines(inline, path))


def load_tenant_settings(*, inline: str | None, path: Path | None) -> dict[str, TenantSettings]:
    """Each tenant's settings, gathered over all its keys; two keys of a tenant that give
    different values for one setting are an error, not a silent choice."""
    merged: dict[str, dict[str, Any]] = {}
    for _, tenant, options in _entries(_key_lines(inline, path)):
        mine = merged.setdefault(tenant, {})
        for name, value in options.items():
            if mine.setdefault(name, value) != value:
                raise ValueError(f"tenant {tenant!r} is given two different values of {name}")
    return {tenant: TenantSettings(**options) for tenant, options in merged.items() if options}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Maps a request's API key to its tenant; open (one default tenant) when no keys are set.

    Keys are held as SHA-256 digests only, so a lookup's timing does not depend on how much
    of a guessed key matches, and no key's text stays in the process's memory.
    """

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        admin_token: str | None = None,
        default_tenant: str = "default",
    ) -> None:
        self._tenants = {_digest(key): tenant for key, tenant in keys.items()}
        self._admin = _digest(admin_token) if admin_token else None
        if self._admin in self._tenants:
            # Its tenant's clients would hold the admin token: refused rather than served.
            raise ValueError(
                "the admin token is also an API key, so that tenant could use admin routes"
            )
        self._default = default_tenant

    @property
    def open(self) -> bool:
        """True when no keys are configured and every request is the default tenant."""
        return not self._tenants

    def tenant(self, authorization: str | None) -> str:
        """The tenant of a request, or Unauthorized."""
        if self.open:
            return self._default
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        tenant = self._tenants.get(_digest(token))
        if tenant is None:
            raise Unauthorized("Incorrect API key provided.")
        return tenant

    def check_admin(self, authorization: str | None) -> None:
        """Passes only with the admin token; without one configured, admin routes are closed."""
        if self._admin is None:
            raise Unauthorized(
                "Admin routes are disabled: set SLUICE_GATEWAY_ADMIN_TOKEN.", code="admin_disabled"
            )
        token = bearer_token(authorization)
        if token is None or not hmac.compare_digest(_digest(token), self._admin):
            raise Unauthorized("Missing or incorrect admin token.", code="invalid_admin_token")
