"""The gateway's ASGI app: `uvicorn gateway.app:create_app --factory`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.openapi import openapi_route
from cache.stats import StatsStore
from gateway import admin, page, proxy
from gateway.auth import Authenticator, load_keys, load_tenant_settings
from gateway.errors import GatewayError, error_body, error_response
from gateway.limits import RateLimiter, TenantLimits
from gateway.metrics import CONTENT_TYPE, GatewayMetrics, InflightRequests
from gateway.openapi import gateway_openapi
from gateway.services import Cache, Services
from gateway.settings import GatewaySettings
from gateway.stats import RequestStats
from gateway.upstream import UpstreamPool

log = logging.getLogger("sluice.gateway")


def open_cache(settings: GatewaySettings) -> AbstractAsyncContextManager[Cache]:
    """The real Redis-backed cache, configured from the settings."""
    from gateway.cache_factory import open_response_cache

    return open_response_cache(settings)


async def health(request: Request) -> JSONResponse:
    """GET /health: the process is up (says nothing of Redis or upstreams)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """GET /ready: 200 only when Redis and at least one upstream answer."""
    svc: Services = request.state.services

    async def redis_ok() -> bool:
        try:
            async with asyncio.timeout(1.0):
                return await svc.cache.ping()
        except Exception:
            return False

    redis, upstreams = await asyncio.gather(redis_ok(), svc.upstream.probe())
    ok = redis and any(upstreams.values())
    return JSONResponse(
        {"ready": ok, "redis": redis, "upstreams": upstreams}, status_code=200 if ok else 503
    )


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text."""
    svc: Services = request.state.services
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = error_body(
        str(exc.detail), error_type="invalid_request_error", code=str(exc.status_code)
    )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug must still answer in OpenAI's shape, which clients know how to raise from."""
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    body = error_body("The gateway hit an internal error.", error_type="server_error")
    return JSONResponse(body, status_code=500)


ROUTES = [
    Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
    Route("/v1/completions", proxy.completions, methods=["POST"]),
    Route("/v1/models", proxy.models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/admin", page.admin_page, methods=["GET"]),
    Route("/admin/static/{name}", page.admin_static, methods=["GET"]),
    Route("/admin/stats", admin.stats, methods=["GET"]),
    Route("/admin/cache", admin.delete_cache, methods=["DELETE"]),
    Route("/admin/cache/entries", admin.list_entries, methods=["GET"]),
    Route("/admin/cache/top", admin.top_entries, methods=["GET"]),
    Route("/admin/semantic-hits", admin.semantic_hits, methods=["GET"]),
    Route("/admin/semantic-hits/{hit_id}/wrong", admin.mark_wrong, methods=["POST"]),
    Route("/admin/semantic-negatives", admin.semantic_negatives, methods=["GET"]),
]


def create_app(
    settings: GatewaySettings | None = None,
    *,
    cache: Cache | None = None,
    upstream: UpstreamPool | None = None,
) -> Starlette:
    """Builds the gateway. A `cache` or `upstream` passed in is used as is and left open;
    the ones built from the settings are opened and closed with the app."""
    config = settings or GatewaySettings()
    keys = load_keys(inline=config.api_keys, path=config.api_keys_file)
    tenants = load_tenant_settings(inline=config.api_keys, path=config.api_keys_file)
    auth = Authenticator(keys, admin_token=config.admin_token, default_tenant=config.default_tenant)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            the_cache = (
                cache if cache is not None else await stack.enter_async_context(open_cache(config))
            )
            pool = (
                upstream
                if upstream is not None
                else await stack.enter_async_context(
                    UpstreamPool(
                        config.upstreams,
                        connect_timeout_s=config.connect_timeout_s,
                        read_timeout_s=config.upstream_timeout_s,
                        max_connections=config.max_connections,
                        api_key=config.upstream_api_key,
                    )
                )
            )
            metrics = GatewayMetrics()
            stats = await stack.enter_async_context(
                RequestStats(
                    StatsStore(the_cache.redis, prefix=the_cache.key_prefix),
                    registry=metrics.registry,
                )
            )
            defaults = TenantLimits(
                rpm=config.tenant_rpm, tpm=config.tenant_tpm, concurrency=config.tenant_concurrency
            )
            limiter = None
            if defaults.limited or any(own.limits.limited for own in tenants.values()):
                limiter = await stack.enter_async_context(
                    RateLimiter(
                        the_cache.redis,
                        prefix=the_cache.key_prefix,
                        timeout_s=config.redis_timeout_s,
                        lease_s=config.concurrency_lease_s,
                    )
                )
            services = Services(
                cache=the_cache,
                upstream=pool,
                auth=auth,
                max_body_bytes=config.max_body_bytes,
                default_ttl_s=config.cache_ttl_s,
                max_ttl_s=config.max_ttl_s,
                semantic=config.semantic,
                tenants=tenants,
                cache_timeout_s=config.cache_timeout_s,
                cache_sampled=config.cache_sampled,
                speculate=config.speculative_upstream,
                stream_usage=config.upstream_stream_usage,
                log_bodies=config.log_bodies,
                stats=stats,
                metrics=metrics,
                limiter=limiter,
                default_limits=defaults,
            )
            stack.push_async_callback(services.aclose)
            yield {"services": services}

    return Starlette(
        routes=[*ROUTES, openapi_route(gateway_openapi())],
        lifespan=lifespan,
        middleware=[Middleware(InflightRequests)],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
