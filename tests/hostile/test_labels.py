"""Made-up model names are hostile input too: each would otherwise be a new metrics series and
new shared counters in Redis, for as long as a client cares to invent them."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.hostile.conftest import ADMIN, Live
from tests.hostile.test_bodies import assert_error_shape, post

pytestmark = pytest.mark.slow


def test_made_up_model_names_share_one_label(live: Live) -> None:
    names = [f"made-up-{uuid.uuid4().hex}" for _ in range(30)]
    for name in names:
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        reply = post(live, "gateway", "/v1/chat/completions", json.dumps(body).encode())
        assert reply.status_code == 404
        assert_error_shape(reply)
    metrics = httpx.get(live.gateway + "/metrics").text
    assert 'model="(unknown model)"' in metrics
    assert not [name for name in names if name in metrics]
    admin = {"authorization": f"Bearer {ADMIN}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the shared counters are written every half second
        stats = httpx.get(live.gateway + "/admin/stats", headers=admin).text
        if "(unknown model)" in stats:
            break
        time.sleep(0.2)
    assert "(unknown model)" in stats
    assert not [name for name in names if name in stats]
