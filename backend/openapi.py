"""OpenAPI 3.1 documents for the backend's routes (and the pieces the gateway's reuses): what a
client may send and what it gets back, for people, client generators and schema fuzzers.

Request bodies come from the pydantic models that validate them, so the document cannot drift
from the validation; responses are written out here in OpenAI's wire format. (Starlette's own
SchemaGenerator only collects YAML written into handler docstrings: every body twice.)
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.protocol import ChatCompletionRequest, CompletionRequest

REF = "#/components/schemas/{model}"
JSON = "application/json"
SSE = "text/event-stream"
# One server-sent event: `data` is a chunk's JSON (or an error's), the last one `[DONE]`.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's error shape: every 4xx and 5xx answer has it.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}


def _completion_object(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": _USAGE,
        },
    }


RESPONSE_SCHEMAS: dict[str, Any] = {
    "Error": ERROR_SCHEMA,
    "ChatCompletion": _completion_object(
        "chat.completion",
        {
            "type": "object",
            "required": ["index", "message", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "message": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"const": "assistant"},
                        "content": {"type": ["string", "null"]},
                    },
                },
                "finish_reason": {"type": ["string", "null"]},
            },
        },
    ),
    "Completion": _completion_object(
        "text_completion",
        {
            "type": "object",
            "required": ["index", "text", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "text": {"type": "string"},
                "finish_reason": {"type": ["string", "null"]},
            },
        },
    ),
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object"],
                    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
                },
            },
        },
    },
}

ERROR_STATUSES: dict[str, str] = {
    "400": "Invalid request: not JSON, wrong types or values, unsupported option, too long.",
    "401": "Missing or unknown API key, or admin token.",
    "404": "Unknown model, route or item.",
    "413": "Body larger than the configured limit.",
    "429": "Queue or rate limit full; see Retry-After.",
    "499": "The client left before its answer was ready (never seen by that client).",
    "500": "Internal error.",
    "502": "The upstream answered something that is not a usable reply.",
    "503": "Draining, or no upstream (or Redis, for admin writes) reachable.",
    "504": "The answer did not come in time.",
}


def request_schemas() -> dict[str, Any]:
    """JSON schemas of the two request bodies and everything they refer to."""
    _, top = models_json_schema(
        [(CompletionRequest, "validation"), (ChatCompletionRequest, "validation")],
        ref_template=REF,
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def error_responses(*statuses: str) -> dict[str, Any]:
    """Response objects for the given error statuses, each with the OpenAI error body."""
    return {
        status: {
            "description": ERROR_STATUSES[status],
            "content": {JSON: {"schema": {"$ref": REF.format(model="Error")}}},
        }
        for status in statuses
    }


def generation_operation(
    summary: str, request: str, response: str, errors: tuple[str, ...]
) -> dict[str, Any]:
    """POST /v1/completions or /v1/chat/completions: JSON in; JSON or SSE out."""
    return {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": REF.format(model=request)}}},
        },
        "responses": {
            "200": {
                "description": "The answer, whole, or as server-sent events when `stream`.",
                "content": {
                    JSON: {"schema": {"$ref": REF.format(model=response)}},
                    SSE: {"schema": SSE_EVENT},
                },
            },
            **error_responses(*errors),
        },
    }


def plain_get(summary: str, content: dict[str, Any], *errors: str) -> dict[str, Any]:
    """A GET with no parameters."""
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": content},
                **error_responses(*errors),
            },
        }
    }


def probe_get(summary: str) -> dict[str, Any]:
    """A health probe: 200 or 503, each with a small JSON object (not the error shape)."""
    body = {JSON: {"schema": {"type": "object"}}}
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "Up.", "content": body},
                "503": {"description": "Not serving.", "content": body},
            },
        }
    }


OPENAPI_PATH = "/openapi.json"
_SELF = plain_get("This document.", {JSON: {"schema": {"type": "object"}}})


def backend_openapi() -> dict[str, Any]:
    """The backend's document."""
    errors = ("400", "404", "413", "429", "499", "500", "503", "504")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice backend", "version": "1"},
        "paths": {
            "/v1/completions": {
                "post": generation_operation(
                    "Complete a prompt.", "CompletionRequest", "Completion", errors
                )
            },
            "/v1/chat/completions": {
                "post": generation_operation(
                    "Answer a conversation.", "ChatCompletionRequest", "ChatCompletion", errors
                )
            },
            "/v1/models": plain_get(
                "The model served.", {JSON: {"schema": {"$ref": REF.format(model="ModelList")}}}
            ),
            "/health": probe_get("200 while serving; 503 while draining."),
            "/metrics": plain_get(
                "Prometheus text.", {"text/plain": {"schema": {"type": "string"}}}
            ),
            OPENAPI_PATH: _SELF,
        },
        "components": {"schemas": {**request_schemas(), **RESPONSE_SCHEMAS}},
    }


def openapi_route(document: dict[str, Any]) -> Route:
    """GET /openapi.json serving `document`, serialised once."""
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi(request: Request) -> Response:
        return Response(body, media_type=JSON)

    return Route(OPENAPI_PATH, openapi, methods=["GET"])
