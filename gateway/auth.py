"""API keys to tenant namespaces, and the separate admin token."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.errors import Unauthorized


def parse_key_pairs(lines: Iterable[str]) -> dict[str, str]:
    """Reads `KEY=TENANT` items (blank items and `#` comments skipped)."""
    keys: dict[str, str] = {}
    for raw in lines:
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        key, sep, tenant = item.partition("=")
        if not sep or not key.strip() or not tenant.strip():
            raise ValueError("API key entries must look like KEY=TENANT")
        keys[key.strip()] = tenant.strip()
    return keys


def load_keys(*, inline: str | None, path: Path | None) -> dict[str, str]:
    """Merges keys from the environment string and the keys file."""
    keys: dict[str, str] = {}
    if path is not None:
        keys.update(parse_key_pairs(path.read_text().splitlines()))
    if inline:
        keys.update(parse_key_pairs(inline.split(",")))
    return keys


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

    Keys are held as SHA-256 digests, so a lookup's timing does not depend on how much of a
    guessed key matches.
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
