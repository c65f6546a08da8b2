"""API keys, tenants and the admin token."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import Authenticator, load_keys
from gateway.errors import Unauthorized


def test_keys_from_file_and_environment(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nsk-a = acme\n\nsk-b=globex  # second\n")
    keys = load_keys(inline="sk-c=initech,sk-b=override", path=keys_file)
    assert keys == {"sk-a": "acme", "sk-b": "override", "sk-c": "initech"}
    with pytest.raises(ValueError):
        load_keys(inline="no-tenant-here", path=None)


def test_open_mode_puts_everyone_in_the_default_tenant() -> None:
    auth = Authenticator({}, default_tenant="local")
    assert auth.open
    assert auth.tenant(None) == "local"
    assert auth.tenant("Bearer whatever") == "local"


def test_keys_select_tenants_and_reject_the_rest() -> None:
    auth = Authenticator({"sk-a": "acme"})
    assert auth.tenant("Bearer sk-a") == "acme"
    assert auth.tenant("bearer  sk-a ") == "acme"
    for header in (None, "", "Bearer", "Bearer sk-b", "Basic sk-a"):
        with pytest.raises(Unauthorized):
            auth.tenant(header)


def test_admin_token_is_separate_and_required() -> None:
    with pytest.raises(Unauthorized):
        Authenticator({}).check_admin("Bearer anything")
    auth = Authenticator({"sk-a": "acme"}, admin_token="root")
    auth.check_admin("Bearer root")
    with pytest.raises(Unauthorized):
        auth.check_admin("Bearer sk-a")
