"""Nothing but a complete answer is ever cached: errors, streams cut short, content-filter
refusals and answers cut by `max_tokens` before any output all go upstream again, JSON and
streamed, through the gateway's HTTP routes with the real ResponseCache (fakeredis and the
real Redis, whose entry keys are counted)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.gateway.conftest import SharedRedis, real_gateway
from tests.gateway.fakes import serving

# What the upstream does for each question: a JSON answer (or error) and a stream of events.
BAD = {
    "server error": "a 500 in OpenAI's error shape",
    "error body": "a 200 whose body is an error, no choices",
    "content filter": "finish_reason content_filter, part of an answer",
    "empty cut": "finish_reason length before any output (max_tokens spent)",
    "aborted": "finish_reason abort, a reason of vLLM's for a request it dropped",
    "no reason": "no finish_reason at all",
    "cut stream": "a stream that stops without [DONE] (JSON: a 502)",
    "error event": "an error event in the middle of a stream (JSON: a 502)",
}
GOOD = {"complete": "stop", "long": "length, with text: what the same request gets again"}


def _choice(chat: bool, text: str, reason: str | None) -> dict[str, Any]:
    if chat:
        return {"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": reason}  # fmt: skip
    return {"index": 0, "text": text, "finish_reason": reason}


def _outcome(question: str) -> tuple[str, str | None]:
    """The answer text and finish_reason a question asks for."""
    return {
        "content filter": ("I can", "content_filter"),
        "empty cut": ("", "length"),
        "aborted": ("partial", "abort"),
        "no reason": ("text", None),
        "long": ("a long answer", "length"),
    }.get(question, ("a full answer", "stop"))


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _complete(request: Request) -> Response:
    body = await request.json()
    chat = request.url.path.endswith("/chat/completions")
    asked = body["messages"][-1]["content"] if chat else body["prompt"]
    question = asked.lower().rstrip("?")  # near-duplicates are answered alike
    error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    if question == "server error":
        return JSONResponse(error, status_code=500)
    if question == "error body":
        return JSONResponse(error)
    if not body.get("stream") and question in ("cut stream", "error event"):
        return JSONResponse(error, status_code=502)
    text, reason = _outcome(question)
    base = {"id": f"cmpl-{uuid.uuid4().hex[:8]}", "created": int(time.time()), "model": "fake"}
    if not body.get("stream"):
        kind = "chat.completion" if chat else "text_completion"
        return JSONResponse({**base, "object": kind, "choices": [_choice(chat, text, reason)]})
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str, finish: str | None) -> bytes:
        part = {"delta": {"content": piece}} if chat else {"text": piece}
        return _event({**base, "object": kind,
                       "choices": [{"index": 0, **part, "finish_reason": finish}]})  # fmt: skip

    async def events() -> AsyncIterator[bytes]:
        yield chunk(text, None)
        if question == "cut stream":
            return
        if question == "error event":
            yield _event(error)
        yield chunk("", reason)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def scripted_upstream() -> Starlette:
    """An OpenAI-like upstream that answers each question of BAD and GOOD its own way."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", _complete, methods=["POST"]),
            Route("/v1/completions", _complete, methods=["POST"]),
            Route("/health", health),
        ]
    )


async def _ask(
    http: httpx.AsyncClient, url: str, endpoint: str, question: str, *, stream: bool
) -> str:
    """One greedy request; its x-cache."""
    body: dict[str, Any] = {"model": "fake", "temperature": 0, "stream": stream}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": question}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = question
        path = "/v1/completions"
    reply = await http.post(url + path, json=body)
    return reply.headers["x-cache"]


async def _entry_count(redis: SharedRedis) -> int:
    client = redis.client()
    return len([k async for k in client.scan_iter(match=f"{redis.prefix}:*:e:*", count=1000)])


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_only_complete_answers_are_cached(
    shared_redis: SharedRedis, endpoint: str, stream: bool
) -> None:
    async with (
        serving(scripted_upstream()) as upstream,
        real_gateway(shared_redis, upstream) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        for question in [*BAD, *GOOD]:
            assert await _ask(http, url, endpoint, question, stream=stream) == "miss", question
        # Stores land just after the answer: once the good ones are hits, any bad one that
        # was going to be stored has been.
        for question in GOOD:
            for _ in range(100):
                if await _ask(http, url, endpoint, question, stream=stream) == "hit":
                    break
            else:
                raise AssertionError(f"{question!r} was never stored")
        for question in BAD:
            # Near-duplicates too: a semantic hit could only come from a stored bad answer.
            for asked in (question, question.upper() + "?"):
                assert await _ask(http, url, endpoint, asked, stream=stream) != "hit", asked
                assert await _ask(http, url, endpoint, asked, stream=stream) != "semantic"
        assert await _entry_count(shared_redis) == len(GOOD)
