"""API keys are held only as SHA-256 digests: once a gateway configured from a keys file has
served requests with them, no live object in the process holds a key's text, while the tenant
names read from the same lines are found (so the search does see the gateway's memory)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.conftest import Stack

KEY_MARK = "sk-mem-"
TENANT_MARK = "tenant-mem-"


def _write_keys(path: Path) -> set[bytes]:
    """Writes two random keys to the keys file; returns only their digests."""
    keys = [KEY_MARK + secrets.token_hex(16) for _ in range(2)]
    lines = [f"{key}={TENANT_MARK}{n}" for n, key in enumerate(keys)]
    path.write_text("\n".join(lines) + "\n")
    return {hashlib.sha256(key.encode()).digest() for key in keys}


async def _use_keys(path: Path, url: str) -> None:
    """Sends a request with each key (read back from the file, so only this frame held it)."""
    keys = [line.split("=")[0] for line in path.read_text().splitlines()]
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    async with httpx.AsyncClient(timeout=10) as http:
        for key in keys:
            reply = await http.post(
                url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer " + key}
            )
            assert reply.status_code == 200


def _live_texts(mark: str) -> set[str]:
    """Every str (or bytes, decoded) containing `mark` that a live object refers to, following
    references from the collector's objects into the containers it does not track (a dict of
    strings only, a tuple of them) and into dict keys."""
    gc.collect()
    found: set[str] = set()
    pending = gc.get_objects()
    seen = {id(obj) for obj in pending}
    while pending:
        holder = pending.pop()
        # A dict's traversal skips its string keys (they cannot form cycles): add them.
        keys = list(holder) if isinstance(holder, dict) else []
        for value in [*gc.get_referents(holder), *keys]:
            if isinstance(value, bytes | bytearray):
                value = bytes(value).decode(errors="replace")
            if isinstance(value, str):
                if mark in value:
                    found.add(value)
            elif id(value) not in seen:
                seen.add(id(value))
                pending.append(value)
    return found


async def test_no_live_object_holds_an_api_key(
    tmp_path: Path, make_stack: Callable[..., AbstractAsyncContextManager[Stack]]
) -> None:
    keys_file = tmp_path / "keys"
    digests = _write_keys(keys_file)
    options: dict[str, Any] = {"api_keys_file": keys_file}
    async with make_stack(**options) as stack:
        await _use_keys(keys_file, stack.url)
        keys_file.unlink()  # the file's text is not a copy in the process
        # uvicorn holds a connection's last request headers until it sees the client close.
        for _ in range(20):
            await asyncio.sleep(0.05)
            if not (leaked := _keys_held(digests)):
                break
        assert {t for t in _live_texts(TENANT_MARK) if re.fullmatch(TENANT_MARK + "[01]", t)}
    assert not leaked, f"{len(leaked)} API keys are held as text"


def _keys_held(digests: set[bytes]) -> set[str]:
    """The keys (known by their digests) that some live object holds as text."""
    return {
        key
        for text in _live_texts(KEY_MARK)
        for key in re.findall(KEY_MARK + "[0-9a-f]{32}", text)
        if hashlib.sha256(key.encode()).digest() in digests
    }
