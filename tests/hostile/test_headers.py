"""Hostile header values on the gateway's OpenAI routes: its API key, cache-control and TTL
headers are parsed by the gateway itself, so they get the same guarantee as bodies."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import API_KEY, Live
from tests.hostile.test_bodies import assert_handled

pytestmark = pytest.mark.slow

BODY = (
    b'{"model":"demo","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0}'
)

# What HTTP allows in a field value (RFC 9110: visible ASCII, space, tab, bytes 0x80-0xFF);
# other bytes are a protocol error that uvicorn answers itself, before any app sees them.
FIELD_BYTES = [9, 32, *range(33, 127), *range(128, 256)]
header_value = st.one_of(
    st.lists(st.sampled_from(FIELD_BYTES), max_size=60).map(lambda b: bytes(b).strip()),
    st.sampled_from(
        [b"", b"9" * 5000, b"-1", b"0", b"1e9", b"\xd9\xa1\xd9\xa2", b"\xff\xfe",
         b"no-cache, no-store", b"no-cache=" + b"x" * 4000, b"max-age=-1", b"Bearer",
         b"Bearer " + b"k" * 8000, b"Basic dXNlcjpwYXNz", b"bearer " + API_KEY.encode()]
    ),
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(["authorization", "cache-control", "x-cache-ttl"]),
    value=header_value,
)
def test_hostile_headers_never_get_a_5xx(live: Live, name: str, value: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    if name != "authorization":
        headers.append((b"authorization", f"Bearer {API_KEY}".encode()))
    headers.append((name.encode(), value))
    with httpx.Client(timeout=60) as client:
        request = client.build_request(
            "POST", live.gateway + "/v1/chat/completions", content=BODY, headers=headers
        )
        assert_handled(client.send(request))
