"""Pooled HTTP client over the upstream servers: least-outstanding balancing and failover."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from gateway.errors import UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("sluice.gateway.upstream")

# Nothing was sent: the refused connection, or the socket connect timing out.
_CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Statuses meaning "not this server, not now" (draining: 503, queue full: 429): nothing was
# generated, so another upstream may answer instead.
RETRY_ELSEWHERE = frozenset({429, 503})
_JSON_HEADERS = {"content-type": "application/json"}
# httpx's default, kept: below uvicorn's 5 s, so an idle connection is dropped here first.
_KEEPALIVE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class UpstreamReply:
    """A complete, non-streamed upstream answer."""

    status_code: int
    content: bytes
    content_type: str
    upstream: str
    retry_after: str | None = None


class UpstreamPool:
    """One pooled `aiohttp.ClientSession` shared by all upstream base URLs.

    Each request goes to the upstream with the fewest requests outstanding from this gateway;
    a connection failure (nothing was sent) is retried on another upstream, and the failed one
    is skipped for `down_s` while others are left. An answer of 503 or 429 (draining, queue
    full) is retried once on another upstream, before any of its body reaches the caller; when
    none is left, the last such answer is the one yielded. The session lives between
    `__aenter__` and `__aexit__` (aiohttp needs a running event loop to create it).

    Args:
        urls: base URLs of OpenAI-compatible servers, without the `/v1` suffix.
        connect_timeout_s: time allowed to open a connection.
        read_timeout_s: time allowed between two chunks of an answer.
        max_connections: connections kept across all upstreams.
        down_s: how long an upstream that refused a connection is passed over.
        api_key: sent to every upstream as `Authorization: Bearer` (a `vllm serve --api-key`
            or a hosted server); clients' own keys are never forwarded.
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
    ) -> None:
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._outstanding = dict.fromkeys(self.urls, 0)
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._down_s = down_s
        self._turn = itertools.count()
        # `connect` bounds the wait for a free pooled connection as well, as httpx's pool
        # timeout did (it was the read timeout); `sock_connect` is the connect timeout proper.
        self._timeout = aiohttp.ClientTimeout(
            connect=read_timeout_s, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._max_connections = max_connections
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        # The environment's proxy per upstream (HTTP_PROXY & co. minus NO_PROXY), found once
        # here rather than by aiohttp's `trust_env` on every call.
        self._proxies = {url: _env_proxy(url) for url in self.urls}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> UpstreamPool:
        if self._session is not None:
            raise RuntimeError("This UpstreamPool is already open; it cannot be entered twice.")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=_KEEPALIVE_S
            ),
            timeout=self._timeout,
            headers=self._headers,
            # Upstream cookies are never kept or sent back, as before.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(
                "UpstreamPool is not open: use it as `async with UpstreamPool(...)`."
            )
        return self._session

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
    async def _send(
        self, method: str, path: str, content: bytes | None
    ) -> AsyncIterator[tuple[str, aiohttp.ClientResponse]]:
        """Sends a request, with failover; yields the upstream and its answer, body unread.

        Leaving closes the answer: a body not read to its end closes the connection, so the
        upstream sees the caller leave (and stops generating)."""
        client = self._client
        tried: set[str] = set()
        status_retries = 1
        while True:
            url = self._pick(tried)
            self._outstanding[url] += 1
            try:
                try:
                    with _call_failures():
                        answer = await client.request(
                            method,
                            url + path,
                            data=content,
                            headers=_JSON_HEADERS if content is not None else None,
                            proxy=self._proxies[url],
                            allow_redirects=False,
                        )
                except _CONNECT_FAILURES as exc:
                    self._failed(url, exc, tried)
                    continue
                try:
                    if (
                        answer.status in RETRY_ELSEWHERE
                        and status_retries > 0
                        and self._refused(url, answer.status, tried)
                    ):
                        status_retries -= 1
                        continue
                    yield url, answer
                    return
                finally:
                    answer.close()
            finally:
                self._outstanding[url] -= 1

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> AsyncIterator[UpstreamStream]:
        """Sends a request and yields the answer once its headers are in, body unread."""
        async with self._send(method, path, content) as (url, answer):
            yield UpstreamStream(
                status_code=answer.status, headers=answer.headers, upstream=url, answer=answer
            )

    async def request(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> UpstreamReply:
        """Sends a request and reads the whole answer."""
        async with self._send(method, path, content) as (url, answer):
            with _call_failures():
                body = await answer.read()
            return UpstreamReply(
                status_code=answer.status,
                content=body,
                content_type=answer.headers.get("content-type", "application/json"),
                upstream=url,
                retry_after=answer.headers.get("retry-after"),
            )

    async def _get_one(self, url: str, path: str, timeout_s: float) -> tuple[int, str] | None:
        timeout = aiohttp.ClientTimeout(
            connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        try:
            async with self._client.get(
                url + path, timeout=timeout, proxy=self._proxies[url], allow_redirects=False
            ) as reply:
                return reply.status, await reply.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def probe(self, *, timeout_s: float = 1.0) -> dict[str, bool]:
        """Whether each upstream answers `/health` with 200 now."""
        replies = await asyncio.gather(*(self._get_one(u, "/health", timeout_s) for u in self.urls))
        return {
            url: reply is not None and reply[0] == 200
            for url, reply in zip(self.urls, replies, strict=True)
        }

    async def metrics_texts(self, *, timeout_s: float = 1.0) -> dict[str, str | None]:
        """Each upstream's Prometheus `/metrics` text, or None where it has none."""
        replies = await asyncio.gather(
            *(self._get_one(u, "/metrics", timeout_s) for u in self.urls)
        )
        return {
            url: reply[1] if reply is not None and reply[0] == 200 else None
            for url, reply in zip(self.urls, replies, strict=True)
        }


class UpstreamStreamCut(Exception):
    """A streamed answer broke off: the upstream stalled past the read timeout, or the
    connection or the body's framing broke."""


@dataclass(frozen=True, kw_only=True)
class UpstreamStream:
    """A streamed upstream answer whose headers have arrived; its body is read once, chunk by
    chunk as it arrives (`chunks`) or whole (`read`)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    upstream: str
    answer: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        with _cut_off():
            async for chunk in self.answer.content.iter_any():
                yield chunk

    async def read(self) -> bytes:
        with _cut_off():
            return await self.answer.read()


@contextmanager
def _call_failures() -> Iterator[None]:
    """Turns a call's failure into UpstreamTimeout or UpstreamUnavailable; a connection that
    was never made passes through as it is, for the caller to fail over."""
    try:
        yield
    except _CONNECT_FAILURES:
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout("The upstream server did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"Upstream failed: {type(exc).__name__}.") from exc


@contextmanager
def _cut_off() -> Iterator[None]:
    """Turns a body read's failure into UpstreamStreamCut, naming the cause."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamStreamCut("read timed out") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamStreamCut(type(exc).__name__) from exc


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, as aiohttp's `trust_env` would pick it."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)
