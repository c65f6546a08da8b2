"""Backend errors, each carrying the HTTP status and OpenAI error fields it maps to."""

from __future__ import annotations


class BackendError(Exception):
    """Base of every error the backend answers a client with."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(BackendError):
    """Malformed JSON, wrong field types or values, or an unsupported option."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class ContextLengthExceeded(InvalidRequest):
    """The prompt plus the requested completion does not fit the model's context."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFound(BackendError):
    """The request names a model this backend does not serve."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )


class NotFound(BackendError):
    """No route at this path."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class BodyTooLarge(BackendError):
    """The request body is past `max_body_bytes`: refused before it is all in memory."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than {limit} bytes.")


class QueueFull(BackendError):
    """The waiting queue is at its bound; the client should retry later."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, max_queue: int, *, retry_after_s: int = 1) -> None:
        super().__init__(
            f"The backend queue is full ({max_queue} requests waiting); retry later.",
            headers={"Retry-After": str(retry_after_s)},
        )


class DeadlineExceeded(BackendError):
    """The request did not finish within the backend's per-request timeout."""

    status_code = 504
    error_type = "timeout_error"
    code = "timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"The request did not complete within {timeout_s:g} s.")


class ShuttingDown(BackendError):
    """The backend is draining and accepts no new work."""

    status_code = 503
    error_type = "service_unavailable_error"
    code = "shutting_down"

    def __init__(self, message: str = "The backend is shutting down.") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class EngineFailed(BackendError):
    """The engine raised while running the batch that held this request."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class StartupError(Exception):
    """A service cannot start: not an HTTP answer but the one line an operator reads."""

    def __init__(self, cause: str, fix: str) -> None:
        cause, fix = cause.rstrip(". "), fix.rstrip(". ")
        super().__init__(f"{cause}. {fix}.")
        self.cause = cause
        self.fix = fix
