"""API keys, tenants and the admin token."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import Authenticator, TenantSettings, load_keys, load_tenant_settings
from gateway.errors import Unauthorized
from gateway.limits import TenantLimits


def test_keys_from_file_and_environment(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nsk-a = acme\n\nsk-b=globex  # second\n")
    keys = load_keys(inline="sk-c=initech,sk-b=override", path=keys_file)
    assert keys == {"sk-a": "acme", "sk-b": "override", "sk-c": "initech"}
    with pytest.raises(ValueError):
        load_keys(inline="no-tenant-here", path=None)


def test_key_lines_carry_their_tenants_semantic_settings(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "sk-a = acme semantic=off  # exact caching only\n"
        "sk-a2=acme\n"
        "sk-b=globex semantic_threshold=0.93 semantic=on\n"
    )
    inline = "sk-c=initech,sk-b2=globex semantic_threshold=0.93"
    assert load_keys(inline=inline, path=keys_file) == {
        "sk-a": "acme",
        "sk-a2": "acme",
        "sk-b": "globex",
        "sk-c": "initech",
        "sk-b2": "globex",
    }
    assert load_tenant_settings(inline=inline, path=keys_file) == {
        "acme": TenantSettings(semantic=False),
        "globex": TenantSettings(semantic=True, semantic_threshold=0.93),
    }


def test_key_lines_carry_their_tenants_limits(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("sk-a=acme rpm=60 tpm=40000  # a paying tenant\nsk-b=globex\n")
    inline = "sk-a2=acme concurrency=4,sk-c=initech tpm=100 semantic=off"
    tenants = load_tenant_settings(inline=inline, path=keys_file)
    assert tenants == {
        "acme": TenantSettings(rpm=60, tpm=40000, concurrency=4),
        "initech": TenantSettings(semantic=False, tpm=100),
    }
    assert tenants["acme"].limits == TenantLimits(rpm=60, tpm=40000, concurrency=4)
    defaults = TenantLimits(rpm=10, tpm=500, concurrency=2)
    assert tenants["initech"].limits.over(defaults) == TenantLimits(rpm=10, tpm=100, concurrency=2)


@pytest.mark.parametrize(
    "item",
    [
        "sk-secret=acme rpm=0",
        "sk-secret=acme tpm=-5",
        "sk-secret=acme concurrency=1.5",
        "sk-secret=acme rpm=",
        "sk-secret=acme rpm=²",
        "sk-secret=acme rpm=10,sk-secret2=acme rpm=20",  # one tenant, two values
        "sk-secret=acme semantic=maybe",
        "sk-secret=acme semantic_threshold=1.5",
        "sk-secret=acme semantic_threshold=nan",
        "sk-secret=my team",  # tenant names cannot hold spaces: "team" is no option
        "sk-secret semantic=off",  # no tenant: the key would have been "sk-secret semantic"
        "sk-secret=acme semantic=off,sk-secret2=acme semantic=on",  # one tenant, two values
    ],
)
def test_bad_key_options_are_refused_without_quoting_the_key(item: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_tenant_settings(inline=item, path=None)
    assert "sk-secret" not in str(refused.value)


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
