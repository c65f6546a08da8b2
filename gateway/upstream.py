"""Pooled HTTP client over the upstream servers: least-outstanding balancing and failover."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import httpx

from gateway.errors import UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("sluice.gateway.upstream")

_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout)
# Statuses meaning "not this server, not now" (draining: 503, queue full: 429): nothing was
# generated, so another upstream may answer instead.
RETRY_ELSEWHERE = frozenset({429, 503})


@dataclass(frozen=True, kw_only=True)
class UpstreamReply:
    """A complete, non-streamed upstream answer."""

    status_code: int
    content: bytes
    content_type: str
    upstream: str
    retry_after: str | None = None


class UpstreamPool:
    """One pooled `httpx.AsyncClient` shared by all upstream base URLs.

    Each request goes to the upstream with the fewest requests outstanding from this gateway;
    a connection failure (nothing was sent) is retried on another upstream, and the failed one
    is skipped for `down_s` while others are left. An answer of 503 or 429 (draining, queue
    full) is retried once on another upstream, before any of its body reaches the caller; when
    none is left, the last such answer is the one yielded.

    Args:
        urls: base URLs of OpenAI-compatible servers, without the `/v1` suffix.
        connect_timeout_s: time allowed to open a connection.
        read_timeout_s: time allowed between two chunks of an answer.
        max_connections: connections kept across all upstreams.
        down_s: how long an upstream that refused a connection is passed over.
        api_key: sent to every upstream as `Authorization: Bearer` (a `vllm serve --api-key`
            or a hosted server); clients' own keys are never forwarded.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        urls: list[str],
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 300.0,
        max_connections: int = 256,
        down_s: float = 1.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._outstanding = dict.fromkeys(self.urls, 0)
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._down_s = down_s
        self._turn = itertools.count()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"authorization": f"Bearer {api_key}"} if api_key else None,
            transport=transport,
        )
        # The request path talks to the client's transport (its connection pool) directly:
        # the client's layers (auth, redirects, cookies, event hooks) cost about 0.3 ms of CPU
        # per call here and do nothing for an upstream call. The headers and timeouts sent are
        # the client's own, and each upstream gets the transport the client would pick for it
        # (an environment proxy included), hence the private `_transport_for_url`.
        self._transports = {
            url: self._client._transport_for_url(httpx.URL(url)) for url in self.urls
        }
        self._headers = list(self._client.headers.multi_items())
        self._timeouts = self._client.timeout.as_dict()
        self._urls: dict[tuple[str, str], httpx.URL] = {}

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    def outstanding(self) -> dict[str, int]:
        """Requests in flight per upstream (for stats)."""
        return dict(self._outstanding)

    def _pick(self, tried: set[str]) -> str:
        now = time.monotonic()
        left = [url for url in self.urls if url not in tried]
        if not left:
            raise UpstreamUnavailable("No upstream server could be reached.")
        alive = [url for url in left if self._down_until[url] <= now] or left
        # Rotating the start breaks ties, so idle upstreams share the load evenly.
        start = next(self._turn) % len(alive)
        rotated = alive[start:] + alive[:start]
        return min(rotated, key=self._outstanding.__getitem__)

    def _refused(self, url: str, status: int, tried: set[str]) -> bool:
        """Passes over an upstream that answered `status`; True if another one is left to try."""
        tried.add(url)
        self._down_until[url] = time.monotonic() + self._down_s
        left = any(other not in tried for other in self.urls)
        if left:
            log.warning("upstream %s answered %d; trying another", url, status)
        return left

    def _failed(self, url: str, exc: Exception, tried: set[str]) -> None:
        log.warning("upstream %s unreachable (%s); trying another", url, type(exc).__name__)
        tried.add(url)
        self._down_until[url] = time.monotonic() + self._down_s

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Sends a request and yields the response with its body still unread."""
        tried: set[str] = set()
        status_retries = 1
        while True:
            url = self._pick(tried)
            self._outstanding[url] += 1
            try:
                request = self._request(method, url, path, content)
                try:
                    response = await self._transports[url].handle_async_request(request)
                except _CONNECT_FAILURES as exc:
                    self._failed(url, exc, tried)
                    continue
                except httpx.TimeoutException as exc:
                    raise UpstreamTimeout("The upstream server did not answer in time.") from exc
                except httpx.TransportError as exc:
                    raise UpstreamUnavailable(f"Upstream failed: {type(exc).__name__}.") from exc
                if (
                    response.status_code in RETRY_ELSEWHERE
                    and status_retries > 0
                    and self._refused(url, response.status_code, tried)
                ):
                    status_retries -= 1
                    await response.aclose()
                    continue
                try:
                    response.extensions["sluice_upstream"] = url
                    yield response
                finally:
                    await response.aclose()
                return
            finally:
                self._outstanding[url] -= 1

    def _request(self, method: str, url: str, path: str, content: bytes | None) -> httpx.Request:
        target = self._urls.get((url, path))
        if target is None:
            target = self._urls[url, path] = httpx.URL(url + path)
        headers = self._headers
        if content is not None:
            headers = [*headers, ("content-type", "application/json")]
        return httpx.Request(
            method, target, content=content, headers=headers, extensions={"timeout": self._timeouts}
        )

    async def request(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> UpstreamReply:
        """Sends a request and reads the whole answer."""
        async with self.stream(method, path, content=content) as response:
            try:
                body = await response.aread()
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout("The upstream server did not answer in time.") from exc
            except httpx.TransportError as exc:
                raise UpstreamUnavailable(f"Upstream failed: {type(exc).__name__}.") from exc
            return UpstreamReply(
                status_code=response.status_code,
                content=body,
                content_type=response.headers.get("content-type", "application/json"),
                upstream=str(response.extensions["sluice_upstream"]),
                retry_after=response.headers.get("retry-after"),
            )

    async def _get_one(self, url: str, path: str, timeout_s: float) -> httpx.Response | None:
        try:
            return await self._client.get(url + path, timeout=timeout_s)
        except httpx.HTTPError:
            return None

    async def probe(self, *, timeout_s: float = 1.0) -> dict[str, bool]:
        """Whether each upstream answers `/health` with 200 now."""
        replies = await asyncio.gather(*(self._get_one(u, "/health", timeout_s) for u in self.urls))
        return {
            url: reply is not None and reply.status_code == 200
            for url, reply in zip(self.urls, replies, strict=True)
        }

    async def metrics_texts(self, *, timeout_s: float = 1.0) -> dict[str, str | None]:
        """Each upstream's Prometheus `/metrics` text, or None where it has none."""
        replies = await asyncio.gather(
            *(self._get_one(u, "/metrics", timeout_s) for u in self.urls)
        )
        return {
            url: reply.text if reply is not None and reply.status_code == 200 else None
            for url, reply in zip(self.urls, replies, strict=True)
        }
