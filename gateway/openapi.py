"""The gateway's OpenAPI 3.1 document: the backend's OpenAI routes as the gateway serves them
(bearer API key, cache headers, its own errors), plus its health, metrics and admin routes."""

from __future__ import annotations

import copy
from typing import Any

from backend.openapi import (
    JSON,
    OPENAPI_PATH,
    REF,
    RESPONSE_SCHEMAS,
    error_responses,
    generation_operation,
    plain_get,
    probe_get,
    request_schemas,
)

_STRING = {"type": "string"}
_BEARER: list[dict[str, list[str]]] = [{"apiKey": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
_OBJECT = {JSON: {"schema": {"type": "object"}}}
_CACHE_HEADERS = {
    "x-cache": {
        "description": "How the answer was served.",
        "schema": {"enum": ["hit", "semantic", "miss", "bypass"]},
    }
}
_REQUEST_HEADERS = [
    {
        "name": "Cache-Control",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "`no-cache` answers afresh; `no-store` keeps the answer out of the cache.",
    },
    {
        "name": "x-cache-ttl",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Seconds to keep this answer (a positive whole number).",
    },
]


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": kind},
        "description": description,
    }


_TENANT = _query("tenant", "string", "Only this tenant's items.")
_LIMIT = _query("limit", "integer", "At most this many items.")


def _admin(summary: str, parameters: list[dict[str, Any]], *errors: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": _ADMIN,
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": _OBJECT},
            **error_responses("401", *errors),
        },
    }


def _page(
    summary: str, parameters: list[dict[str, Any]] | None = None, *errors: str
) -> dict[str, Any]:
    files = {media: {"schema": _STRING} for media in ("text/html", "text/javascript", "text/css")}
    return {
        "summary": summary,
        "parameters": parameters or [],
        "responses": {"200": {"description": "OK", "content": files}, **error_responses(*errors)},
    }


def _generation(summary: str, request: str, response: str) -> dict[str, Any]:
    errors = ("400", "401", "404", "413", "429", "500", "502", "503", "504")
    operation = generation_operation(summary, request, response, errors)
    operation["security"] = _BEARER
    operation["parameters"] = _REQUEST_HEADERS
    operation["responses"]["200"]["headers"] = _CACHE_HEADERS
    return operation


def _gateway_request_schemas() -> dict[str, Any]:
    """The backend's request schemas, with `model` required: the gateway keys its cache by it
    and routes on it, so it refuses a request without one."""
    schemas = copy.deepcopy(request_schemas())
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        schema = schemas[name]
        schema["required"] = sorted({*schema.get("required", []), "model"})
        schema["properties"]["model"] = {"type": "string", "minLength": 1}
    return schemas


def gateway_openapi() -> dict[str, Any]:
    """The gateway's document."""
    models = plain_get(
        "The upstream's models.", {JSON: {"schema": {"$ref": REF.format(model="ModelList")}}}
    )
    models["get"]["security"] = _BEARER
    models["get"]["responses"].update(error_responses("401", "502", "503", "504"))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice gateway", "version": "1"},
        "paths": {
            "/v1/chat/completions": {
                "post": _generation(
                    "Answer a conversation, from the cache when it can.",
                    "ChatCompletionRequest",
                    "ChatCompletion",
                )
            },
            "/v1/completions": {
                "post": _generation(
                    "Complete a prompt, from the cache when it can.",
                    "CompletionRequest",
                    "Completion",
                )
            },
            "/v1/models": models,
            "/health": probe_get("The process is up."),
            "/ready": probe_get("200 once Redis and at least one upstream answer."),
            "/metrics": plain_get(
                "Prometheus text.", {"text/plain": {"schema": {"type": "string"}}}
            ),
            "/admin": {"get": _page("The dashboard (HTML; it asks for the admin token).")},
            "/admin/static/{name}": {
                "get": _page(
                    "The dashboard's script and style.",
                    [{"name": "name", "in": "path", "required": True, "schema": _STRING}],
                    "404",
                )
            },
            "/admin/stats": {"get": _admin("Counts, cache counters, backends' batching.", [])},
            "/admin/cache": {
                "delete": _admin(
                    "Remove cached entries.",
                    [
                        _TENANT,
                        _query("model", "string", "Only this model's entries."),
                        _query("entry_id", "string", "Only this entry."),
                        _query("all", "string", "`true` to remove every entry."),
                    ],
                    "400",
                )
            },
            "/admin/cache/entries": {
                "get": _admin(
                    "A page of entries with hit counts.",
                    [_TENANT, _query("offset", "integer", "Skip this many."), _LIMIT],
                    "400",
                )
            },
            "/admin/cache/top": {
                "get": _admin(
                    "The most-hit entries.",
                    [_TENANT, _LIMIT, _query("scan", "integer", "Entries looked at.")],
                    "400",
                )
            },
            "/admin/semantic-hits": {
                "get": _admin("The latest semantic hits.", [_TENANT, _LIMIT], "400")
            },
            "/admin/semantic-hits/{hit_id}/wrong": {
                "post": _admin(
                    "Report a semantic hit wrong.",
                    [
                        {
                            "name": "hit_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "404",
                    "503",
                )
            },
            "/admin/semantic-negatives": {
                "get": _admin("Semantic hits reported wrong.", [_TENANT, _LIMIT], "400")
            },
            OPENAPI_PATH: plain_get("This document.", _OBJECT),
        },
        "components": {
            "schemas": {**_gateway_request_schemas(), **RESPONSE_SCHEMAS},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "Admin token."},
            },
        },
    }
