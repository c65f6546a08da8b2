"""Admin routes: statistics, cache invalidation, entry listing and feedback on semantic hits,
behind the admin token."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from cache.errors import RedisUnavailable
from cache.response_cache import EntryInfo
from gateway.errors import BadRequest, CacheUnavailable, NotFound
from gateway.metrics import backend_batch_stats
from gateway.services import Services

# Entries read to find the most-hit ones: the listing has no order by hits.
TOP_SCAN = 5000


def _services(request: Request) -> Services:
    svc: Services = request.state.services
    svc.auth.check_admin(request.headers.get("authorization"))
    return svc


async def _backends(svc: Services) -> dict[str, Any]:
    texts = await svc.upstream.metrics_texts()
    outstanding = svc.upstream.outstanding()
    out: dict[str, Any] = {}
    for url, text in texts.items():
        entry: dict[str, Any] = {"reachable": text is not None, "outstanding": outstanding[url]}
        if text is not None:
            try:
                entry["batching"] = backend_batch_stats(text)
            except ValueError:
                entry["batching"] = None
        out[url] = entry
    return out


async def stats(request: Request) -> JSONResponse:
    """GET /admin/stats: every replica's request counts, this gateway's backends' batching."""
    svc = _services(request)
    requests, backends = await asyncio.gather(svc.stats.snapshot(), _backends(svc))
    return JSONResponse(
        {
            "gateway": requests,
            "backends": backends,
            "in_flight_upstream_calls": len(svc.flights),
            "at": time.time(),
        }
    )


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", param=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}", param=name)
    return value


async def delete_cache(request: Request) -> JSONResponse:
    """DELETE /admin/cache?tenant=&model=&entry_id=  (all=true to empty every tenant)."""
    svc = _services(request)
    query = request.query_params
    filters = {
        "namespace": query.get("tenant") or None,
        "model": query.get("model") or None,
        "entry_id": query.get("entry_id") or None,
    }
    if not any(filters.values()) and query.get("all") != "true":
        raise BadRequest("Give tenant, model or entry_id (or all=true to remove every entry).")
    deleted = await svc.cache.invalidate(**filters)
    return JSONResponse({"deleted": deleted})


async def list_entries(request: Request) -> JSONResponse:
    """GET /admin/cache/entries?tenant=&offset=&limit=: a page of entries with hit counts."""
    svc = _services(request)
    offset = _int_param(request, "offset", 0, low=0, high=10**9)
    limit = _int_param(request, "limit", 50, low=1, high=1000)
    tenant = request.query_params.get("tenant") or None
    page = await svc.cache.entries(namespace=tenant, offset=offset, limit=limit)
    return JSONResponse(
        {
            "data": [dataclasses.asdict(entry) for entry in page],
            "offset": offset,
            "limit": limit,
            "next_offset": offset + len(page) if len(page) == limit else None,
        }
    )


async def top_entries(request: Request) -> JSONResponse:
    """GET /admin/cache/top?tenant=&limit=: the most-hit entries among the first `scan`."""
    svc = _services(request)
    limit = _int_param(request, "limit", 10, low=1, high=1000)
    scan = _int_param(request, "scan", TOP_SCAN, low=1, high=100_000)
    tenant = request.query_params.get("tenant") or None
    seen: list[EntryInfo] = []
    while len(seen) < scan:
        want = min(1000, scan - len(seen))
        page = await svc.cache.entries(namespace=tenant, offset=len(seen), limit=want)
        seen += page
        if len(page) < want:
            break
    seen.sort(key=lambda entry: (-entry.hits, -entry.created_at))
    return JSONResponse(
        {
            "data": [dataclasses.asdict(entry) for entry in seen[:limit]],
            "scanned": len(seen),
            "limit": limit,
        }
    )


async def semantic_hits(request: Request) -> JSONResponse:
    """GET /admin/semantic-hits?tenant=&limit=: the latest semantic hits, newest first, with
    both questions, for an operator to review."""
    svc = _services(request)
    limit = _int_param(request, "limit", 50, low=1, high=100_000)
    tenant = request.query_params.get("tenant") or None
    hits = await svc.cache.semantic_hits(namespace=tenant, limit=limit)
    return JSONResponse({"data": [dataclasses.asdict(hit) for hit in hits], "limit": limit})


async def mark_wrong(request: Request) -> JSONResponse:
    """POST /admin/semantic-hits/{hit_id}/wrong: that entry never serves that question (or
    one like it) again, on any replica; the pair is kept as a labelled negative and counted."""
    svc = _services(request)
    try:
        hit = await svc.cache.mark_wrong(request.path_params["hit_id"])
    except RedisUnavailable:
        raise CacheUnavailable("Redis did not answer: the hit was not marked wrong.") from None
    if hit is None:
        raise NotFound(
            "No such semantic hit in the log (unknown id, or older than the log keeps).",
            param="hit_id",
        )
    return JSONResponse({"marked_wrong": dataclasses.asdict(hit)})


async def semantic_negatives(request: Request) -> JSONResponse:
    """GET /admin/semantic-negatives?tenant=&limit=: hits reported wrong, most recently
    reported first: labelled pairs for training a verifier."""
    svc = _services(request)
    limit = _int_param(request, "limit", 1000, low=1, high=1_000_000)
    tenant = request.query_params.get("tenant") or None
    found = await svc.cache.negatives(namespace=tenant, limit=limit)
    return JSONResponse({"data": [dataclasses.asdict(hit) for hit in found], "limit": limit})
