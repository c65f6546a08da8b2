"""Schemathesis against the live backend and gateway, from the OpenAPI documents they serve:
valid and invalid requests for every documented route never get a 5xx, and every answer has a
documented status, content type and body (errors in OpenAI's shape)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.openapi import backend_openapi
from gateway.openapi import gateway_openapi
from tests.hostile.conftest import ADMIN, API_KEY, Live

pytestmark = pytest.mark.slow

# Not negative_data_rejection: like OpenAI's API, the services ignore unknown query
# parameters and fields rather than refuse them.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Enough to reach every route's boundaries and a spread of invalid bodies, few enough that both
# services are done in a couple of minutes on two shared cores.
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def served_model_only(document: dict[str, Any]) -> dict[str, Any]:
    """The document with `model` pinned to the one served: any other name is a 404 before
    validation, so valid cases would rarely reach the engine (or, through the gateway, the
    cache). Invalid cases still vary it."""
    pinned = copy.deepcopy(document)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        pinned["components"]["schemas"][name]["properties"]["model"] = {"const": "demo"}
    return pinned


backend_schema = schemathesis.openapi.from_dict(served_model_only(backend_openapi()))
gateway_schema = schemathesis.openapi.from_dict(served_model_only(gateway_openapi()))


@pytest.mark.parametrize(
    ("service", "document"), [("backend", backend_openapi), ("gateway", gateway_openapi)]
)
def test_each_service_serves_its_openapi_document(live: Live, service: str, document: Any) -> None:
    reply = httpx.get(live.url(service) + "/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    served = reply.json()
    assert served == document()
    assert served["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(served["paths"])


@backend_schema.parametrize()
@EXAMPLES
def test_backend_conforms_to_its_document(case: schemathesis.Case, live: Live) -> None:
    case.call_and_validate(base_url=live.backend, checks=CHECKS, timeout=120)


@gateway_schema.parametrize()
@EXAMPLES
def test_gateway_conforms_to_its_document(case: schemathesis.Case, live: Live) -> None:
    token = ADMIN if case.path.startswith("/admin") else API_KEY
    case.call_and_validate(
        base_url=live.gateway,
        headers={"authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=120,
    )
