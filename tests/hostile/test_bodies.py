"""Hostile bodies against the live backend and gateway: never a 5xx, and every refusal a 4xx
in OpenAI's error shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.bodies import HUGE_NUMBERS, hostile_body
from tests.hostile.conftest import Live

pytestmark = pytest.mark.slow

SERVICES = ["backend", "gateway"]
ROUTES = ["/v1/chat/completions", "/v1/completions"]


def assert_error_shape(reply: httpx.Response) -> None:
    """OpenAI's {"error": {"message", "type", "param", "code"}}, message and type strings."""
    body: Any = reply.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def assert_handled(reply: httpx.Response) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:500])
    if reply.status_code >= 400:
        assert 400 <= reply.status_code < 500
        assert_error_shape(reply)


def post(live: Live, service: str, path: str, body: bytes) -> httpx.Response:
    headers = {**live.headers(service), "content-type": "application/json"}
    return httpx.post(live.url(service) + path, content=body, headers=headers, timeout=120)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model":"demo","prompt":"hi","user":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"model":"demo","prompt":"hi","user":' + b'{"a":' * 65 + b"1" + b"}" * 65 + b"}",
    ],
    ids=["100k-arrays", "5k-in-a-field", "65-objects-in-a-field"],
)
def test_deep_nesting_is_a_400_in_openai_shape(live: Live, service: str, body: bytes) -> None:
    reply = post(live, service, "/v1/completions", body)
    assert reply.status_code == 400, reply.text[:300]
    assert_error_shape(reply)
    assert "nested more than 64 levels" in reply.json()["error"]["message"]


@pytest.mark.parametrize("service", SERVICES)
def test_nesting_within_the_limit_still_serves(live: Live, service: str) -> None:
    nested = '{"a":' * 60 + "1" + "}" * 60
    body = '{"model":"demo","prompt":"hi","max_tokens":2,"temperature":0,"metadata":' + nested
    reply = post(live, service, "/v1/completions", (body + "}").encode())
    assert reply.status_code == 200, reply.text[:300]


@pytest.mark.parametrize("service", SERVICES)
def test_a_lone_surrogate_is_a_400(live: Live, service: str) -> None:
    body = b'{"model":"demo","max_tokens":2,"messages":[{"role":"user","content":"a\\ud800"}]}'
    reply = post(live, service, "/v1/chat/completions", body)
    assert reply.status_code == 400, reply.text[:300]
    assert_error_shape(reply)
    assert "surrogate" in reply.json()["error"]["message"]


NUMERIC_FIELDS = [
    "max_tokens", "max_completion_tokens", "min_tokens", "temperature", "top_p", "seed", "n",
    "presence_penalty", "top_logprobs",
]  # fmt: skip


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_extreme_numbers_in_every_numeric_field(live: Live, service: str, field: str) -> None:
    """Every huge, tiny, negative and denormal number in each numeric field: the seeds past
    64 bits and the top_p below float32's range once failed the engine (500)."""
    for number in [*HUGE_NUMBERS, 1e-320, 2**64, -(2**64)]:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        if field != "max_tokens":
            body["temperature"] = 1.0
        body[field] = number
        reply = post(live, service, "/v1/chat/completions", json.dumps(body).encode())
        assert_handled(reply)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("path", ROUTES)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    derandomize=True,
)  # fmt: skip
@given(data=st.data())
def test_hostile_bodies_never_get_a_5xx(
    live: Live, service: str, path: str, data: st.DataObject
) -> None:
    body = data.draw(hostile_body(path), label="body")
    assert_handled(post(live, service, path, body))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_the_backend_refuses_a_body_past_its_limit(live: Live, declared: bool) -> None:
    """16 MiB by default: a giant body is refused before it is all in memory."""
    body = b'{"model":"demo","prompt":"' + b"a" * (17 * 1024 * 1024) + b'"}'
    content = body if declared else iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    reply = httpx.post(
        live.backend + "/v1/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=120,
    )
    assert reply.status_code == 413
    assert_error_shape(reply)
    assert reply.json()["error"]["code"] == "request_too_large"
