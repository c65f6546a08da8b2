"""The OpenAI routes: authenticate, look up the cache, else call upstream once, store, answer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from backend.json_body import InvalidJson, parse_json_object
from cache.identity import RequestIdentity, identify
from cache.response_cache import CacheHit, Endpoint
from gateway.errors import (
    BadRequest,
    BodyTooLarge,
    GatewayError,
    RateLimited,
    error_body,
    error_response,
)
from gateway.flight import Flight, Shared
from gateway.limits import Lease, TenantLimits
from gateway.policy import CachePolicy, uncacheable_reason, unstorable_reason
from gateway.services import Services
from gateway.sse import StreamAssembler, event, iter_events, replay
from gateway.stats import Outcome
from gateway.upstream import UpstreamReply, UpstreamStream, UpstreamStreamCut

log = logging.getLogger("sluice.gateway.requests")

JSON = "application/json"
SSE = "text/event-stream"
UNKNOWN_MODEL = "(unknown model)"
_X_CACHE = {"exact": "hit", "semantic": "semantic", "miss": "miss", "bypass": "bypass"}


@dataclass(kw_only=True)
class _Call:
    """One client request on its way through the gateway."""

    svc: Services
    tenant: str
    endpoint: Endpoint
    path: str
    raw: bytes
    body: dict[str, Any]
    policy: CachePolicy
    started: float = field(default_factory=time.perf_counter)
    # Set once this request calls upstream itself (its tokens count, its slot is given back).
    went_upstream: bool = False
    lease: Lease | None = None

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @cached_property
    def limits(self) -> TenantLimits:
        return self.svc.limits_for(self.tenant)

    async def reserve(self) -> None:
        """Takes an upstream slot, unless the tenant is out of tokens or slots (RateLimited)."""
        limiter = self.svc.limiter
        if limiter is not None:
            await limiter.check_tokens(self.tenant, self.limits)
            self.lease = await limiter.acquire(self.tenant, self.limits)
        self.went_upstream = True

    def release(self, answer: dict[str, Any] | None = None) -> None:
        """Gives the upstream slot back and charges the answer's tokens (once)."""
        limiter, lease, self.lease = self.svc.limiter, self.lease, None
        if limiter is None:
            return
        if lease is not None:
            self.svc.spawn(limiter.release(lease))
        if self.went_upstream and (tokens := _tokens(answer)) > 0:
            self.went_upstream = False
            self.svc.spawn(limiter.charge(self.tenant, self.limits, tokens))

    @cached_property
    def identity(self) -> RequestIdentity:
        """Made once (on first use: a bypass needs none) for single-flight, lookup and store."""
        return identify(self.tenant, self.endpoint, self.body)

    @property
    def key(self) -> str:
        """Single-flight key: the exact cache key, so requests that share a flight are
        exactly those the cache would answer alike."""
        return self.identity.key_hash

    def finish(
        self,
        outcome: Outcome,
        status: int,
        *,
        answer: dict[str, Any] | None = None,
        coalesced: bool = False,
    ) -> None:
        """Counts the request once its answer has been sent in full."""
        svc = self.svc
        self.release(answer if outcome not in ("exact", "semantic") else None)
        # Names the upstream does not know (a typo, or a flood of made-up ones) share one
        # label, so they cannot grow the metrics and the shared counters without bound.
        model = self.model if status != 404 else UNKNOWN_MODEL
        latency_ms = (time.perf_counter() - self.started) * 1000.0
        saved = _tokens(answer) if outcome in ("exact", "semantic") else 0
        svc.stats.record(
            self.tenant,
            model,
            outcome,
            latency_ms=latency_ms,
            saved_tokens=saved,
            coalesced=coalesced,
        )
        if log.isEnabledFor(logging.DEBUG):
            cache_label = _X_CACHE.get(outcome, outcome)
            log.debug(
                "%s tenant=%s model=%s cache=%s status=%d %.1fms",
                self.path, self.tenant, model, cache_label, status, latency_ms,
            )  # fmt: skip
        if svc.log_bodies:
            log.info("request=%s answer=%s", self.raw.decode(errors="replace"), json.dumps(answer))


def _tokens(answer: dict[str, Any] | None) -> int:
    usage = (answer or {}).get("usage") or {}
    total = usage.get("total_tokens")
    return int(total) if isinstance(total, int) else 0


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body is larger than {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is larger than {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


def _parse(raw: bytes, endpoint: Endpoint) -> dict[str, Any]:
    try:
        body = parse_json_object(raw)
    except InvalidJson as exc:
        raise BadRequest(exc.message, code=exc.code) from None
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter", param="model")
    if endpoint == "chat":
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise BadRequest("messages must be a non-empty array", param="messages")
    elif "prompt" not in body:
        raise BadRequest("you must provide a prompt parameter", param="prompt")
    return body


def _headers(outcome: Outcome, hit: CacheHit | None = None) -> dict[str, str]:
    headers = {"x-cache": _X_CACHE.get(outcome, "miss")}
    if hit is not None:
        headers["x-cache-entry"] = hit.entry_id
        if hit.similarity is not None:
            headers["x-cache-similarity"] = f"{hit.similarity:.4f}"
    return headers


def _answer(
    call: _Call,
    answer: dict[str, Any],
    outcome: Outcome,
    *,
    hit: CacheHit | None = None,
    coalesced: bool = False,
) -> Response:
    """A complete answer from the cache or a shared flight, as JSON or as a replayed stream."""
    headers = _headers(outcome, hit)
    if call.stream:
        events = replay(answer, call.endpoint, include_usage=call.include_usage)
        response = Response(b"".join(events), media_type=SSE, headers=headers)
    else:
        body = json.dumps(answer, separators=(",", ":")).encode()
        response = Response(body, media_type=JSON, headers=headers)
    call.finish(outcome, 200, answer=answer, coalesced=coalesced)
    return response


async def _join_flight(call: _Call, *, finished_too: bool) -> Response | None:
    """Answers from an identical request's upstream call, if one is running (or just ended)."""
    if not call.svc.flights:
        return None  # nothing in flight: no need to compute the key
    future = call.svc.flights.get(call.key)
    if future is None:
        return None
    if future.done():
        shared = future.result()
        if not finished_too or shared is None:
            return None
        return _answer(call, shared.answer, "exact")
    shared = await asyncio.shield(future)
    if shared is None:
        return None
    if shared.hit is not None:
        return _answer(call, shared.answer, shared.hit.kind, hit=shared.hit, coalesced=True)
    return _answer(call, shared.answer, "miss", coalesced=True)


async def proxy(request: Request, endpoint: Endpoint, path: str) -> Response:
    """The cache flow for one completion request."""
    svc: Services = request.state.services
    tenant = svc.auth.tenant(request.headers.get("authorization"))
    raw = await _read_body(request, svc.max_body_bytes)
    body = _parse(raw, endpoint)
    policy = CachePolicy.from_headers(request.headers, max_ttl_s=svc.max_ttl_s)
    call = _Call(
        svc=svc, tenant=tenant, endpoint=endpoint, path=path, raw=raw, body=body, policy=policy
    )
    reason = uncacheable_reason(endpoint, body, cache_sampled=svc.cache_sampled)
    try:
        if svc.limiter is not None:
            await svc.limiter.admit(tenant, call.limits)
        if reason is not None or not (policy.lookup or policy.store):
            return await _upstream(call, "bypass", flight=None)
        shared = await _join_flight(call, finished_too=policy.lookup)
        if shared is not None:
            return shared
        if policy.lookup:
            speculate = svc.speculate and svc.semantic_for(tenant)
            hit = await svc.lookup(call.identity, semantic=not speculate)
            if hit is not None:
                return _answer(call, hit.response, hit.kind, hit=hit)
            shared = await _join_flight(call, finished_too=True)
            if shared is not None:
                return shared
            if speculate:
                return await _race_semantic_lookup(call)
        return await _upstream(call, "miss", flight=svc.flights.lead(call.key))
    except GatewayError as exc:
        if isinstance(exc, RateLimited):
            svc.metrics.rate_limited.labels(tenant, exc.limit).inc()
        call.finish("error", exc.status_code)
        response = error_response(exc)
        response.headers["x-cache"] = "bypass" if reason is not None else "miss"
        return response
    except BaseException:
        call.release()
        raise


async def _upstream(call: _Call, outcome: Outcome, *, flight: Flight | None) -> Response:
    """Calls upstream (a miss leads the flight of its key; a bypass leads none)."""
    try:
        await call.reserve()
        # Usage is asked of a stream for the store, and for the tenant's tokens per minute.
        sent = await _send(call, store_usage=flight is not None or call.limits.tpm is not None)
        return await _deliver(call, outcome, flight, sent)
    except BaseException:
        if flight is not None:
            call.svc.flights.finish(call.key, flight, None, keep=False)
        raise


async def _race_semantic_lookup(call: _Call) -> Response:
    """An exact miss: the upstream call starts at once and the semantic lookup runs meanwhile.

    A miss then costs no embedding time on top of the upstream's; a semantic hit drops the
    upstream call (an opened stream is closed, so the upstream sees its client leave and
    frees the request) and answers from the cache.
    """
    svc = call.svc
    flight = svc.flights.lead(call.key)
    try:
        await call.reserve()
    except RateLimited:
        # Out of upstream tokens or slots: a paraphrase already answered is still served.
        hit = await svc.lookup(call.identity, exact=False)
        if hit is None:
            svc.flights.finish(call.key, flight, None, keep=False)
            raise
        svc.flights.finish(call.key, flight, Shared(hit.response, hit), keep=False)
        return _answer(call, hit.response, hit.kind, hit=hit)
    sending = asyncio.create_task(_send(call, store_usage=True))
    try:
        hit = await svc.lookup(call.identity, exact=False)
        if hit is not None:
            await _abandon(sending)
            svc.metrics.speculation_dropped.inc()
            # Identical requests that joined this flight share the cached answer.
            svc.flights.finish(call.key, flight, Shared(hit.response, hit), keep=False)
            return _answer(call, hit.response, hit.kind, hit=hit)
        return await _deliver(call, "miss", flight, await sending)
    except BaseException:
        await _abandon(sending)
        svc.flights.finish(call.key, flight, None, keep=False)
        raise


async def _abandon(sending: asyncio.Task[_Sent]) -> None:
    """Stops an upstream call whose answer is no longer wanted, closing what it opened."""
    sending.cancel()
    await asyncio.wait([sending])
    if sending.cancelled() or sending.exception() is not None:
        return
    sent = sending.result()
    if isinstance(sent, _OpenedStream):
        with anyio.CancelScope(shield=True):
            await sent.close()


@dataclass(frozen=True, kw_only=True)
class _OpenedStream:
    """An upstream stream whose headers have arrived and whose body is still unread."""

    opened: AbstractAsyncContextManager[UpstreamStream]
    response: UpstreamStream
    strip_usage: bool

    async def close(self) -> None:
        await self.opened.__aexit__(None, None, None)


_Sent = UpstreamReply | _OpenedStream


async def _send(call: _Call, *, store_usage: bool) -> _Sent:
    """Sends the request upstream: a whole answer, or a stream once its headers are in.

    store_usage: ask a stream for usage too (kept with the stored answer, stripped for a
    client that did not ask).
    """
    if not call.stream:
        return await call.svc.upstream.request("POST", call.path, content=call.raw)
    content = call.raw
    strip_usage = False
    if store_usage and call.svc.stream_usage and not call.include_usage:
        options = call.body.get("stream_options")
        options = {**options} if isinstance(options, dict) else {}
        asked = {**call.body, "stream_options": {**options, "include_usage": True}}
        content = json.dumps(asked).encode()
        strip_usage = True
    opened = call.svc.upstream.stream("POST", call.path, content=content)
    response = await opened.__aenter__()
    return _OpenedStream(opened=opened, response=response, strip_usage=strip_usage)


def _settle(call: _Call, flight: Flight | None, answer: dict[str, Any] | None) -> None:
    """Shares the answer with waiting followers and stores it; failures are never stored."""
    if flight is None:
        return
    svc = call.svc
    keep = answer is not None and call.policy.store and unstorable_reason(answer) is None
    svc.flights.finish(call.key, flight, None if answer is None else Shared(answer), keep=keep)
    if keep and answer is not None:
        ttl = call.policy.ttl_s or svc.default_ttl_s
        svc.spawn(_store_then_release(call, flight, answer, ttl))


async def _store_then_release(
    call: _Call, flight: Flight, answer: dict[str, Any], ttl: int
) -> None:
    try:
        await call.svc.store(call.identity, answer, ttl)
    finally:
        call.svc.flights.release(call.key, flight)


async def _deliver(call: _Call, outcome: Outcome, flight: Flight | None, sent: _Sent) -> Response:
    """Answers the client from what upstream sent, settling the flight and the stats."""
    if isinstance(sent, _OpenedStream):
        return await _deliver_stream(call, outcome, flight, sent)
    answer: dict[str, Any] | None = None
    if sent.status_code == 200 and sent.content_type.startswith(JSON):
        try:
            parsed = json.loads(sent.content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("choices"):
            answer = parsed
    _settle(call, flight, answer)
    call.finish(outcome if sent.status_code < 400 else "error", sent.status_code, answer=answer)
    headers = _headers(outcome)
    if sent.retry_after is not None:
        headers["retry-after"] = sent.retry_after
    return Response(
        sent.content, status_code=sent.status_code, media_type=sent.content_type, headers=headers
    )


async def _deliver_stream(
    call: _Call,
    outcome: Outcome,
    flight: Flight | None,
    sent: _OpenedStream,
) -> Response:
    response = sent.response
    if response.status_code != 200:
        try:
            data = await response.read()
        finally:
            await sent.close()
        _settle(call, flight, None)
        call.finish("error", response.status_code)
        headers = _headers(outcome)
        if "retry-after" in response.headers:
            headers["retry-after"] = response.headers["retry-after"]
        return Response(
            data,
            status_code=response.status_code,
            media_type=response.headers.get("content-type", JSON),
            headers=headers,
        )
    return _RelayResponse(_Relay(call, outcome, flight, sent))


class _Relay:
    """Passes upstream events through as they come, assembling the answer to store at the end.

    `close` runs exactly once, whether the stream ended, broke, or was never started because
    the client left first: it frees the upstream connection and settles the flight, so no
    follower waits forever.
    """

    def __init__(
        self,
        call: _Call,
        outcome: Outcome,
        flight: Flight | None,
        sent: _OpenedStream,
    ) -> None:
        self._call, self.outcome, self._flight = call, outcome, flight
        self._sent = sent
        self._answer: dict[str, Any] | None = None
        self._closed = False

    async def events(self) -> AsyncIterator[bytes]:
        assembler = StreamAssembler(self._call.endpoint)
        try:
            async for raw, data in iter_events(self._sent.response.chunks()):
                if data is not None:
                    chunk = assembler.feed(data)
                    if self._sent.strip_usage and chunk is not None and "usage" in chunk:
                        # Usage was asked for the store only: the client sees no trace of it,
                        # neither the usage chunk nor `"usage": null` on the others.
                        if chunk["usage"] and not chunk.get("choices"):
                            continue
                        raw = event({k: v for k, v in chunk.items() if k != "usage"})
                yield raw
        except UpstreamStreamCut as exc:
            self._call.svc.metrics.upstream_errors.labels("stream_cut").inc()
            message = f"The upstream stream broke off ({exc})."
            yield event(error_body(message, error_type="server_error", code="upstream_stream_cut"))
        else:
            self._answer = assembler.result()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._sent.close()
        _settle(self._call, self._flight, self._answer)
        final: Outcome = self.outcome if self._answer is not None else "error"
        self._call.finish(final, 200, answer=self._answer)


class _RelayResponse(StreamingResponse):
    """A streamed miss whose relay is closed however the response ends."""

    def __init__(self, relay: _Relay) -> None:
        super().__init__(relay.events(), media_type=SSE, headers=_headers(relay.outcome))
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._relay.close()


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await proxy(request, "chat", "/v1/chat/completions")


async def completions(request: Request) -> Response:
    """POST /v1/completions."""
    return await proxy(request, "completion", "/v1/completions")


async def models(request: Request) -> Response:
    """GET /v1/models, from the first upstream that answers."""
    svc: Services = request.state.services
    svc.auth.tenant(request.headers.get("authorization"))
    reply = await svc.upstream.request("GET", "/v1/models")
    return Response(reply.content, status_code=reply.status_code, media_type=reply.content_type)
