"""A gateway on a loopback port in front of the fake upstream, with the in-memory cache."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeResponseCache, UpstreamControl, fake_upstream, serving

ADMIN = "admin-secret"


@dataclass
class Stack:
    url: str
    upstream: UpstreamControl
    cache: FakeResponseCache

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {ADMIN}"}


@contextlib.asynccontextmanager
async def _stack(**overrides: Any) -> AsyncIterator[Stack]:
    control = UpstreamControl()
    cache = FakeResponseCache()
    async with serving(fake_upstream(control)) as upstream_url:
        fields: dict[str, Any] = {"upstreams": [upstream_url], "admin_token": ADMIN}
        fields.update(overrides)
        settings = GatewaySettings(**fields)
        async with serving(create_app(settings, cache=cache)) as url:
            yield Stack(url=url, upstream=control, cache=cache)


@pytest.fixture
def make_stack() -> Callable[..., contextlib.AbstractAsyncContextManager[Stack]]:
    """Builds a gateway stack with settings overrides: `async with make_stack(api_keys=...)`."""
    return _stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with _stack() as built:
        yield built
