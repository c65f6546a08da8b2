"""Small stand-ins for the gateway's neighbours: an OpenAI-like upstream and an in-memory cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cache.identity import RequestIdentity
from cache.response_cache import CacheHit, Endpoint, EntryInfo


@dataclass
class UpstreamControl:
    """What the fake upstream does next, and what it has seen."""

    calls: int = 0
    delay_s: float = 0.0
    fail_status: int | None = None
    fail_headers: dict[str, str] = field(default_factory=dict)
    required_key: str | None = None
    authorizations: list[str | None] = field(default_factory=list)
    truncate: bool = False
    crash: bool = False
    chunk_delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    # When each request arrived (monotonic), and how many clients left before their answer.
    arrivals: list[float] = field(default_factory=list)
    left_early: int = 0


def _question(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1].get("content", ""))
    return str(body.get("prompt", ""))


def fake_upstream(control: UpstreamControl) -> Starlette:
    """An OpenAI-like server answering `echo: <question>`, word by word when streamed, in the
    chunk shape of Sluice's backend and vLLM (`usage: null` on every chunk when usage is asked,
    `system_fingerprint: null` on chat chunks)."""

    def refused(request: Request) -> Response | None:
        """A 401 in OpenAI's shape when a key is required and not given."""
        given = request.headers.get("authorization")
        control.authorizations.append(given)
        if control.required_key is None or given == f"Bearer {control.required_key}":
            return None
        error = {"message": "bad key", "type": "invalid_request_error", "param": None,
                 "code": "invalid_api_key"}  # fmt: skip
        return JSONResponse({"error": error}, status_code=401)

    async def complete(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        body = await request.json()
        control.calls += 1
        control.bodies.append(body)
        control.arrivals.append(time.monotonic())
        if not await _stayed(request, control.delay_s):
            control.left_early += 1
            return Response(status_code=499)
        if control.fail_status is not None:
            error = {"message": "boom", "type": "server_error", "param": None, "code": None}
            return JSONResponse(
                {"error": error}, status_code=control.fail_status, headers=control.fail_headers
            )
        chat = request.url.path.endswith("/chat/completions")
        text = f"echo: {_question(body)}"
        words = text.split(" ")
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words),
            "total_tokens": 7 + len(words),
        }
        base = {"id": f"cmpl-{uuid.uuid4().hex[:8]}", "created": int(time.time())}
        base["model"] = body["model"]
        if not body.get("stream"):
            if chat:
                message = {"role": "assistant", "content": text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop"}
                obj = "text_completion"
            return JSONResponse({**base, "object": obj, "choices": [choice], "usage": usage})

        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra: dict[str, Any] = {"system_fingerprint": None} if chat else {}

        def chunk(choice: dict[str, Any]) -> bytes:
            usage_field = {"usage": None} if with_usage else {}
            return _event({**base, "object": obj, **extra, "choices": [choice], **usage_field})

        obj = "chat.completion.chunk" if chat else "text_completion"

        async def events() -> AsyncIterator[bytes]:
            ended = False
            try:
                for position, word in enumerate(words):
                    piece = word if position == 0 else " " + word
                    part = {"index": 0, "delta": {"content": piece}} if chat else {"text": piece}
                    yield chunk({"index": 0, **part, "logprobs": None, "finish_reason": None})
                    await asyncio.sleep(control.chunk_delay_s)
                    if control.truncate and position == 1:
                        ended = True
                        return
                    if control.crash and position == 1:
                        ended = True
                        raise RuntimeError("upstream crashed mid-stream")
                last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
                yield chunk({**last, "logprobs": None, "finish_reason": "stop"})
                if with_usage:
                    yield _event({**base, "object": obj, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"
                ended = True
            finally:
                if not ended:
                    control.left_early += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        text = (
            "# TYPE sluice_backend_queue_depth gauge\nsluice_backend_queue_depth 2.0\n"
            "# TYPE sluice_backend_batch_size histogram\n"
            'sluice_backend_batch_size_bucket{le="+Inf"} 4.0\n'
            "sluice_backend_batch_size_count 4.0\nsluice_backend_batch_size_sum 10.0\n"
            "# TYPE sluice_backend_requests counter\nsluice_backend_requests_total 10.0\n"
        )
        return Response(text, media_type="text/plain")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", complete, methods=["POST"]),
            Route("/v1/completions", complete, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
            Route("/metrics", metrics),
        ]
    )


async def _stayed(request: Request, seconds: float) -> bool:
    """Waits `seconds`, unless the client leaves first (False then)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(left, 0.01))
    return True


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _exact(namespace: str, endpoint: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "user")}
    return json.dumps([namespace, endpoint, kept], sort_keys=True)


def _scope(namespace: str, endpoint: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "user")}
    if "messages" in kept:
        kept["messages"] = kept["messages"][:-1]
    else:
        kept.pop("prompt", None)
    return json.dumps([namespace, endpoint, kept], sort_keys=True)


@dataclass
class _Entry:
    entry_id: str
    namespace: str
    model: str
    question: str
    response: dict[str, Any]
    ttl_s: int
    created_at: float = field(default_factory=time.time)
    hits: int = 0


class FakeResponseCache:
    """The ResponseCache contract in memory. A paraphrase is the same words after lowercasing
    and dropping punctuation (similarity 0.95). `down = True` makes every call raise. Feedback on
    semantic hits (hit log, wrong reports) is left out: its tests use the real ResponseCache."""

    def __init__(self) -> None:
        self.exact: dict[str, _Entry] = {}
        self.scoped: dict[tuple[str, str], _Entry] = {}
        # The gateway keeps its request statistics on the cache's Redis.
        self.redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        self.key_prefix = "sluice"
        self.down = False
        # How long a semantic lookup takes (the embedding), and when each one ended.
        self.semantic_delay_s = 0.0
        self.semantic_ends: list[float] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("redis is down")

    async def lookup(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        *,
        exact: bool = True,
        semantic: bool = True,
        similarity_threshold: float | None = None,
        identity: RequestIdentity | None = None,
    ) -> CacheHit | None:
        self._check()
        entry = self.exact.get(_exact(namespace, endpoint, body)) if exact else None
        if entry is not None:
            entry.hits += 1
            return CacheHit(kind="exact", entry_id=entry.entry_id, response=entry.response)
        if semantic:
            await asyncio.sleep(self.semantic_delay_s)
            self.semantic_ends.append(time.monotonic())
            entry = self.scoped.get((_scope(namespace, endpoint, body), _normal(_question(body))))
            if entry is not None:
                entry.hits += 1
                return CacheHit(
                    kind="semantic",
                    entry_id=entry.entry_id,
                    response=entry.response,
                    similarity=0.95,
                )
        return None

    async def store(
        self,
        namespace: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        response: dict[str, Any],
        *,
        ttl_s: int | None = None,
        semantic: bool = True,
        identity: RequestIdentity | None = None,
    ) -> str | None:
        self._check()
        entry = _Entry(
            entry_id=uuid.uuid4().hex,
            namespace=namespace,
            model=str(body["model"]),
            question=_question(body),
            response=response,
            ttl_s=ttl_s or 86_400,
        )
        self.exact[_exact(namespace, endpoint, body)] = entry
        if semantic:
            self.scoped[(_scope(namespace, endpoint, body), _normal(_question(body)))] = entry
        return entry.entry_id

    async def invalidate(
        self,
        *,
        namespace: str | None = None,
        model: str | None = None,
        entry_id: str | None = None,
    ) -> int:
        self._check()

        def matches(entry: _Entry) -> bool:
            return (
                (namespace is None or entry.namespace == namespace)
                and (model is None or entry.model == model)
                and (entry_id is None or entry.entry_id == entry_id)
            )

        gone = {e.entry_id for e in self.exact.values() if matches(e)}
        self.exact = {k: e for k, e in self.exact.items() if e.entry_id not in gone}
        self.scoped = {k: e for k, e in self.scoped.items() if e.entry_id not in gone}
        return len(gone)

    async def entries(
        self, *, namespace: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[EntryInfo]:
        self._check()
        chosen = [e for e in self.exact.values() if namespace is None or e.namespace == namespace]
        return [
            EntryInfo(
                entry_id=e.entry_id,
                namespace=e.namespace,
                model=e.model,
                question=e.question,
                created_at=e.created_at,
                hits=e.hits,
                ttl_s=e.ttl_s,
            )
            for e in chosen[offset : offset + limit]
        ]

    async def ping(self) -> bool:
        return not self.down


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Runs an ASGI app under uvicorn on a loopback port in this event loop; yields its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def sse_chunks(sse_text: str) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body, without `[DONE]`."""
    datas = [e.removeprefix("data: ") for e in sse_text.split("\n\n") if e.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"]


def chunk_shape(chunks: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    """Top-level and per-choice key sets of a stream's chunks."""
    shapes = {tuple(sorted(c)) for c in chunks}
    shapes |= {("choice", *sorted(p)) for c in chunks for p in c.get("choices", [])}
    return shapes
