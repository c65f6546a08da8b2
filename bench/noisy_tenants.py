"""Noisy tenants: tenant A floods the gateway at 10x its limit while tenant B keeps its usual
rate; B's p99 latency and its 429s, against B alone (#14, item 4).

Runs an upstream of fixed capacity (SLOTS calls at a time, CALL_MS each: a GPU's batch as a
queue) and two gateways (one uvicorn worker each, exact cache only) as processes on loopback,
on the Redis at REDIS_URL (database 12, keys under a unique prefix, removed at the end): one
gateway with the tenants' limits, one without, to show what the limits prevent. Every request
is a new question, so every admitted one goes upstream.

    .venv/bin/python -m bench.noisy_tenants            # writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.noisy_tenants --quick    # short check, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.gateway import _free_port, _pct, _wait
from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 12
SLOTS = 4
CALL_MS = 200
A_RPM = 300  # tenant A's limit: 5 requests/s, 2 upstream calls at a time
A_CONCURRENCY = 2
A_FLOOD_PER_S = 10 * A_RPM / 60
B_PER_S = 4.0  # tenant B's usual rate, within its own limits
LIMITED_KEYS = (
    f"sk-a=tenant-a rpm={A_RPM} concurrency={A_CONCURRENCY},sk-b=tenant-b rpm=600 concurrency=8"
)
OPEN_KEYS = "sk-a=tenant-a,sk-b=tenant-b"


def upstream_app() -> Starlette:
    """An OpenAI-like upstream that serves SLOTS calls at a time, CALL_MS each, FIFO."""
    slots = asyncio.Semaphore(SLOTS)

    async def complete(request: Request) -> JSONResponse:
        body = await request.json()
        async with slots:
            await asyncio.sleep(CALL_MS / 1000)
        message = {"role": "assistant", "content": "ok"}
        return JSONResponse({
            "id": f"cmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        })  # fmt: skip

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", complete, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", models),
        ]
    )


@dataclass
class Gateways:
    limited: str
    open: str
    prefix: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextlib.contextmanager
def gateways() -> Iterator[Gateways]:
    """The upstream, and a gateway with limits and one without, as processes."""
    redis_url = urlsplit(REDIS_URL)._replace(path=f"/{REDIS_DB}").geturl()
    prefix = f"sluice-bench-{uuid.uuid4().hex[:8]}"
    ports = [_free_port() for _ in range(3)]
    upstream = f"http://127.0.0.1:{ports[0]}"
    serve_upstream = [sys.executable, "-m", "bench.noisy_tenants", "--serve-upstream"]
    procs = [subprocess.Popen([*serve_upstream, str(ports[0])], cwd=REPO)]
    common = ["--upstreams", upstream, "--redis-url", redis_url, "--no-semantic",
              "--cache-key-prefix", prefix, "--log-level", "warning"]  # fmt: skip
    run = [sys.executable, "-m", "gateway.cli", "gateway", *common]
    for port, keys in ((ports[1], LIMITED_KEYS), (ports[2], OPEN_KEYS)):
        procs.append(subprocess.Popen([*run, "--port", str(port), "--api-keys", keys], cwd=REPO))
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        _wait(urls[0], "/health", procs[0])
        for url, proc in zip(urls[1:], procs[1:], strict=True):
            _wait(url, "/ready", proc)
        yield Gateways(urls[1], urls[2], prefix, procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        store = redis.Redis.from_url(redis_url)
        for key in store.scan_iter(match=f"{prefix}*", count=1000):
            store.delete(key)
        store.close()


@dataclass
class Tally:
    """One tenant's answers in one phase."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return _pct(self.latencies_ms, q / 100) if self.latencies_ms else float("nan")


async def _send(http: httpx.AsyncClient, url: str, key: str, tally: Tally) -> None:
    body = {"model": "fake", "temperature": 0,
            "messages": [{"role": "user", "content": f"question {uuid.uuid4().hex}"}]}  # fmt: skip
    started = time.perf_counter()
    try:
        reply = await http.post(
            url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        status = reply.status_code
    except httpx.HTTPError:
        status = 0  # no answer within the client's timeout
    if status == 200:
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    tally.statuses[status] = tally.statuses.get(status, 0) + 1


async def _paced(http: httpx.AsyncClient, url: str, key: str, per_s: float, seconds: float,
                 tally: Tally) -> None:  # fmt: skip
    """Open loop: one request every 1/per_s seconds, whatever the answers take."""
    sent: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for n in range(int(per_s * seconds)):
        await asyncio.sleep(max(0.0, start + n / per_s - time.perf_counter()))
        sent.append(asyncio.create_task(_send(http, url, key, tally)))
    await asyncio.gather(*sent)


async def phase(url: str, seconds: float, *, flood: bool) -> tuple[Tally, Tally]:
    """B at its rate for `seconds`, with A flooding the same gateway meanwhile if `flood`."""
    a, b = Tally(), Tally()
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    # A request unanswered after 30 s counts as an error (only without limits does that happen).
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        runs = [_paced(http, url, "sk-b", B_PER_S, seconds, b)]
        if flood:
            runs.append(_paced(http, url, "sk-a", A_FLOOD_PER_S, seconds, a))
        await asyncio.gather(*runs)
    return a, b


def render(rows: list[tuple[str, Tally, Tally]], seconds: float) -> str:
    baseline = rows[0][2].p(99)
    lines = [
        f"Upstream of {SLOTS} slots x {CALL_MS} ms ({SLOTS * 1000 // CALL_MS} calls/s). Tenant B "
        f"sends {B_PER_S:g} requests/s; tenant A (limits rpm={A_RPM}, "
        f"concurrency={A_CONCURRENCY}) floods at {A_FLOOD_PER_S:g}/s, 10x its rate limit. "
        f"{seconds:g} s per phase, every request a new question (a miss), exact cache only, "
        "one gateway process on the local Redis. A's per-minute window may span two minutes.",
        "",
        "| phase | B p50 ms | B p99 ms | B p99 / baseline | B 429s | B other errors "
        "| A answered | A 429s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, a, b in rows:
        errors = sum(n for s, n in b.statuses.items() if s not in (200, 429))
        lines.append(
            f"| {name} | {b.p(50):.1f} | {b.p(99):.1f} | {b.p(99) / baseline:.2f}x "
            f"| {b.statuses.get(429, 0)} | {errors} | {a.statuses.get(200, 0)} "
            f"| {a.statuses.get(429, 0)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s phases; prints only")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream is not None:
        uvicorn.run(upstream_app(), port=args.serve_upstream, log_level="warning")
        return 0
    seconds = 5.0 if args.quick else args.seconds
    with gateways() as gw:
        rows = []
        _, alone = asyncio.run(phase(gw.limited, seconds, flood=False))
        rows.append(("B alone (baseline)", Tally(), alone))
        a, b = asyncio.run(phase(gw.limited, seconds, flood=True))
        rows.append(("A floods, with limits", a, b))
        a, b = asyncio.run(phase(gw.open, seconds, flood=True))
        rows.append(("A floods, no limits", a, b))
    text = render(rows, seconds)
    print(text)
    if not args.quick:
        write_section("noisy-tenants", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
