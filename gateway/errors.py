"""Gateway errors, each carrying the HTTP status and OpenAI error type it maps to."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class GatewayError(Exception):
    """Base of every error the gateway answers with an OpenAI-shaped JSON body."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    """The request body is not JSON or lacks what the route needs."""

    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(GatewayError):
    """Missing or unknown API key (or admin token)."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    """An admin route names something that does not exist (any more)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class CacheUnavailable(GatewayError):
    """An admin write could not reach Redis; the operator must know it did not happen."""

    status_code = 503
    error_type = "service_unavailable"
    code = "cache_unavailable"


class BodyTooLarge(GatewayError):
    """The request body is past the configured limit."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """The tenant is past one of its limits; the client may try again after `retry_after_s`."""

    status_code = 429
    error_type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit  # requests, tokens or concurrency: the metrics' label


class UpstreamUnavailable(GatewayError):
    """No upstream could be reached (all refused or failed to connect)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    """The upstream accepted the request but did not answer in time."""

    status_code = 504
    error_type = "timeout"
    code = "upstream_timeout"


def error_body(
    message: str, *, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape, which every client library knows how to raise from."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: GatewayError) -> JSONResponse:
    """The HTTP answer for a gateway error."""
    headers = {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, RateLimited):
        headers = {"retry-after": str(exc.retry_after_s)}
    return JSONResponse(
        error_body(exc.message, error_type=exc.error_type, param=exc.param, code=exc.code),
        status_code=exc.status_code,
        headers=headers,
    )
