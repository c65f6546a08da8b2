"""The backend's HTTP surface: OpenAI-compatible routes in front of the batcher.

Run with `sluice backend` or `uvicorn backend.app:create_app --factory`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from backend.batcher import Batcher, Generation
from backend.engines.base import AnyEngine, RowOutput, SamplingParams
from backend.errors import (
    BackendError,
    BodyTooLarge,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    NotFound,
)
from backend.loading import close_engine, load_engine
from backend.metrics import CONTENT_TYPE, BackendMetrics
from backend.openapi import backend_openapi, openapi_route
from backend.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    models_list,
    now,
    parse_request,
    sse,
    usage_chunk,
)
from backend.settings import BackendSettings

log = logging.getLogger("sluice.backend")

T = TypeVar("T")
Kind = Literal["completion", "chat"]
# OpenAI's default for /v1/completions; chat defaults to the rest of the context.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True, kw_only=True)
class Service:
    """What the route handlers share: the engine, the running batcher and the metrics."""

    engine: AnyEngine
    batcher: Batcher
    metrics: BackendMetrics
    model_name: str
    model_aliases: frozenset[str]
    created: int
    max_body_bytes: int

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.model_aliases:
            raise ModelNotFound(model)

    def check_token_ids(self, ids: list[int], *, param: str) -> None:
        """A 400 for ids outside the vocabulary, which would fail the engine's whole batch."""
        vocab = self.engine.vocab_size
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"Token id {bad} is out of range: this model's vocabulary has {vocab} "
                f"tokens (ids 0 to {vocab - 1}).",
                param=param,
            )

    def fit_context(self, n_prompt: int, max_tokens: int | None, *, param: str) -> int:
        """The completion budget, or a 400 if the prompt and budget overflow the context."""
        limit = self.engine.max_model_len
        if n_prompt == 0:
            raise InvalidRequest("The prompt is empty.", param=param)
        if n_prompt >= limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"{param} has {n_prompt} tokens, which leaves no room for a completion.",
                param=param,
            )
        budget = limit - n_prompt if max_tokens is None else max_tokens
        if n_prompt + budget > limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {n_prompt + budget} tokens ({n_prompt} in the {param}, "
                f"{budget} in the completion). Please reduce the length of the {param} "
                "or the completion.",
                param=param,
            )
        return budget


class ClientGone(Exception):
    """The client disconnected while its request waited."""


def _service(request: Request) -> Service:
    service: Service = request.state.service
    return service


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Awaits work, raising ClientGone instead if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        raise ClientGone()
    return task.result()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to pass `limit` (declared or as read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


async def completions(request: Request) -> Response:
    """POST /v1/completions."""
    service = _service(request)
    req = parse_request(await _read_body(request, service.max_body_bytes), CompletionRequest)
    service.check_model(req.model)
    prompt = req.single_prompt()
    if isinstance(prompt, str):
        ids = service.engine.encode_prompt(prompt)
    else:
        ids = prompt
        service.check_token_ids(ids, param="prompt")
    max_tokens = req.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS
    budget = service.fit_context(len(ids), max_tokens, param="prompt")
    return await _serve(
        request,
        service,
        ids,
        req.sampling_params(budget),
        "completion",
        req.stream,
        req.include_usage(),
    )


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    service = _service(request)
    req = parse_request(await _read_body(request, service.max_body_bytes), ChatCompletionRequest)
    service.check_model(req.model)
    try:
        ids = service.engine.encode_chat(req.message_dicts())
    except Exception as exc:  # the model's own chat template refuses these messages
        raise InvalidRequest(
            f"The model's chat template cannot render these messages: {exc}", param="messages"
        ) from exc
    budget = service.fit_context(len(ids), req.requested_max_tokens(), param="messages")
    return await _serve(
        request,
        service,
        ids,
        req.sampling_params(budget),
        "chat",
        req.stream,
        req.include_usage(),
    )


async def _serve(
    request: Request,
    service: Service,
    ids: list[int],
    params: SamplingParams,
    kind: Kind,
    stream: bool,
    include_usage: bool,
) -> Response:
    """Queues the request and answers it whole, or as SSE once its first output exists."""
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    rid = prefix + uuid.uuid4().hex
    created = now()
    gen = service.batcher.submit(ids, params, request_id=rid)
    try:
        if not stream:
            done = await _unless_disconnected(request, gen.collect())
            build = chat_response if kind == "chat" else completion_response
            return JSONResponse(build(rid, service.model_name, created, done))
        # Waiting for the first output lets queue-time errors keep their HTTP status.
        first = await _unless_disconnected(request, anext(gen))
    except ClientGone:
        gen.cancel()
        return Response(status_code=499)
    except BaseException:
        gen.cancel()
        raise
    events = _events(gen, first, rid, service.model_name, created, kind, include_usage)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _events(
    gen: Generation,
    first: RowOutput,
    rid: str,
    model: str,
    created: int,
    kind: Kind,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """SSE chunks in OpenAI's format; a client that leaves cancels the row (finally)."""
    try:
        if kind == "chat":
            yield sse(
                chat_chunk(
                    rid,
                    model,
                    created,
                    {"role": "assistant", "content": ""},
                    None,
                    with_usage_field=include_usage,
                )
            )
        out = first
        while True:
            if kind == "chat":
                if out.text:
                    delta = {"content": out.text}
                    yield sse(
                        chat_chunk(rid, model, created, delta, None, with_usage_field=include_usage)
                    )
                if out.finish_reason is not None:
                    yield sse(
                        chat_chunk(
                            rid,
                            model,
                            created,
                            {},
                            out.finish_reason,
                            with_usage_field=include_usage,
                        )
                    )
            elif out.text or out.finish_reason is not None:
                yield sse(
                    completion_chunk(
                        rid,
                        model,
                        created,
                        out.text,
                        out.finish_reason,
                        with_usage_field=include_usage,
                    )
                )
            if out.finish_reason is not None:
                break
            out = await anext(gen)
        if include_usage:
            obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
            yield sse(
                usage_chunk(rid, model, created, obj, out.prompt_tokens, out.completion_tokens)
            )
    except BackendError as exc:
        yield sse(exc.to_dict())
    finally:
        gen.cancel()
    yield sse("[DONE]")


async def list_models(request: Request) -> Response:
    """GET /v1/models."""
    service = _service(request)
    return JSONResponse(
        models_list(service.model_name, service.created, service.engine.max_model_len)
    )


async def health(request: Request) -> Response:
    """GET /health: 200 while serving, 503 while draining."""
    service = _service(request)
    if service.batcher.accepting:
        return JSONResponse({"status": "ok", "model": service.model_name})
    return JSONResponse({"status": "draining"}, status_code=503)


async def metrics(request: Request) -> Response:
    """GET /metrics in Prometheus text format."""
    service = _service(request)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


def _error_response(request: Request, error: BackendError) -> Response:
    if isinstance(error, InvalidRequest | ModelNotFound):
        service: Service | None = getattr(request.state, "service", None)
        if service is not None:
            service.metrics.count_request("invalid")
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)


async def _on_backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    return _error_response(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error_response(request, NotFound(f"No route for {request.url.path}."))
    error = BackendError(str(exc.detail))
    error.status_code = exc.status_code
    error.error_type = "invalid_request_error"
    return _error_response(request, error)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return _error_response(request, BackendError("The backend hit an internal error."))


def create_app(
    settings: BackendSettings | None = None, *, engine: AnyEngine | None = None
) -> Starlette:
    """Builds the backend app; without an engine, loads the configured model first."""
    settings = settings if settings is not None else BackendSettings()
    loaded: AnyEngine
    owns_engine = engine is None
    if engine is None:
        loaded = load_engine(settings)
        model_name = settings.served_model_name or settings.model
    else:
        loaded = engine
        model_name = settings.served_model_name or loaded.model_name
    aliases = frozenset({model_name, loaded.model_name, settings.model})
    app_metrics = BackendMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        batcher = Batcher(
            loaded,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
            drain_timeout_s=settings.drain_timeout_s,
            batching=settings.batching,
            metrics=app_metrics,
        )
        try:
            async with batcher:
                yield {
                    "service": Service(
                        engine=loaded,
                        batcher=batcher,
                        metrics=app_metrics,
                        model_name=model_name,
                        model_aliases=aliases,
                        created=now(),
                        max_body_bytes=settings.max_body_bytes,
                    )
                }
        finally:
            if owns_engine:
                await asyncio.to_thread(close_engine, loaded)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BackendError: _on_backend_error,
        HTTPException: _on_http_error,
        Exception: _on_unexpected,
    }
    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            openapi_route(backend_openapi()),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
