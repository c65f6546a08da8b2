"""Gateway benchmark: cache-hit serving, miss overhead, and a Zipf workload with paraphrases.

Starts a backend (built-in demo model) and gateways (one uvicorn worker each) as processes on
loopback, against the Redis at REDIS_URL (database 12, keys under a unique prefix, removed at
the end), and drives them with a minimal keep-alive HTTP/1.1 client so that the figures
measure the gateway rather than a client library.

    .venv/bin/python bench/gateway.py            # full run, writes docs/BENCHMARKS.md
    .venv/bin/python bench/gateway.py --quick    # short check, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from bench.report import reproduce_command, write_section  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 12
ADMIN = "bench-admin"


# ---------------------------------------------------------------- a small keep-alive client


class RawHTTP:
    """One keep-alive HTTP/1.1 connection; costs a few microseconds per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHTTP:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        else:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        return status, fields, data


# ---------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(url)


@dataclass
class Services:
    backend: str
    gateway: str
    gateway_exact_only: str
    gateway_no_speculation: str
    prefix: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextlib.contextmanager
def services(model: str, log_path: str) -> Iterator[Services]:
    """Backend + gateways: full cache, exact cache only, full cache without speculation."""
    redis_url = urlsplit(REDIS_URL)._replace(path=f"/{REDIS_DB}").geturl()
    prefix = f"sluice-bench-{uuid.uuid4().hex[:8]}"
    ports = [_free_port() for _ in range(4)]
    backend_url = f"http://127.0.0.1:{ports[0]}"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below, after the processes
    run = [sys.executable, "-m", "gateway.cli"]
    procs = [
        subprocess.Popen(
            [*run, "backend", "--port", str(ports[0]), "--model", model, "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    common = ["--upstreams", backend_url, "--redis-url", redis_url, "--admin-token", ADMIN,
              "--log-level", "warning"]  # fmt: skip
    procs.append(subprocess.Popen(
        [*run, "gateway", "--port", str(ports[1]), "--cache-key-prefix", prefix, *common],
        stdout=log, stderr=subprocess.STDOUT,
    ))  # fmt: skip
    procs.append(subprocess.Popen(
        [*run, "gateway", "--port", str(ports[2]), "--cache-key-prefix", prefix + "-x",
         "--no-semantic", *common],
        stdout=log, stderr=subprocess.STDOUT,
    ))  # fmt: skip
    procs.append(subprocess.Popen(
        [*run, "gateway", "--port", str(ports[3]), "--cache-key-prefix", prefix + "-s",
         "--no-speculative-upstream", *common],
        stdout=log, stderr=subprocess.STDOUT,
    ))  # fmt: skip
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        _wait(urls[0], "/health", procs[0])
        _wait(urls[1], "/ready", procs[1])
        for url, proc in zip(urls[1:], procs[1:], strict=True):
            _wait(url, "/ready", proc)
        yield Services(*urls, prefix, procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        store = redis.Redis.from_url(redis_url)
        for key in store.scan_iter(match=f"{prefix}*", count=1000):
            store.delete(key)
        store.close()


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _chat(model: str, text: str, max_tokens: int) -> bytes:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    return json.dumps(body).encode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- 1. cache-hit serving


async def _hit_run(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    host, port = _host_port(url)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        async with RawHTTP(host, port) as http:
            n = index
            while time.perf_counter() < stop_at:
                body = bodies[n % len(bodies)]
                n += clients
                started = time.perf_counter()
                status, headers, _ = await http.post("/v1/chat/completions", body)
                latencies.append((time.perf_counter() - started) * 1000)
                outcomes[headers.get("x-cache", "?") if status == 200 else str(status)] += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    return {
        "hit_share": outcomes["hit"] / max(1, len(latencies)),
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": _pct(latencies, 0.5),
        "p99": _pct(latencies, 0.99),
    }


async def hit_serving(svc: Services, model: str, seconds: float) -> list[dict[str, float]]:
    """Primes 64 answers, then serves only exact hits at 1 and 32 concurrent clients."""
    bodies = [
        _chat(model, f"Benchmark question number {i}: what is a sluice?", 4) for i in range(64)
    ]
    host, port = _host_port(svc.gateway)
    async with RawHTTP(host, port) as http:
        for body in bodies:
            await http.post("/v1/chat/completions", body)
        for _ in range(100):  # stores land just after the answers
            _, headers, _ = await http.post("/v1/chat/completions", bodies[-1])
            if headers.get("x-cache") == "hit":
                break
            await asyncio.sleep(0.05)
    await _hit_run(svc.gateway, bodies, 4, min(1.0, seconds))  # warm-up
    return [await _hit_run(svc.gateway, bodies, c, seconds) for c in (1, 32)]


# ---------------------------------------------------------------- 2. miss overhead


async def miss_overhead(svc: Services, model: str, rounds: int) -> dict[str, dict[str, float]]:
    """Unique questions, one at a time, alternating: backend direct, gateway (full cache, the
    upstream call racing the semantic lookup), gateway (full cache, upstream called after the
    semantic lookup), gateway (exact cache only), gateway bypass (proxy only)."""
    targets = {
        "backend direct": (svc.backend, {}),
        "gateway miss (exact + semantic lookup)": (svc.gateway, {}),
        "gateway miss (semantic lookup before the upstream call)": (
            svc.gateway_no_speculation,
            {},
        ),
        "gateway miss (exact lookup only)": (svc.gateway_exact_only, {}),
        "gateway bypass (proxy only)": (svc.gateway, {"cache-control": "no-cache, no-store"}),
    }
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    clients = {name: RawHTTP(*_host_port(url)) for name, (url, _) in targets.items()}
    async with contextlib.AsyncExitStack() as stack:
        for client in clients.values():
            await stack.enter_async_context(client)
        for i in range(rounds + 3):
            for name, (_, headers) in targets.items():
                body = _chat(model, f"Unique miss {uuid.uuid4().hex} round {i}", 1)
                started = time.perf_counter()
                status, _, _ = await clients[name].post("/v1/chat/completions", body, headers)
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    raise RuntimeError(f"{name}: {status}")
                if i >= 3:  # the first rounds warm connections and caches
                    latencies[name].append(elapsed)
                await asyncio.sleep(0.02)  # lets background stores finish between requests
    direct = latencies["backend direct"]
    return {
        name: {
            "p50": statistics.median(values),
            "p99": _pct(values, 0.99),
            # Paired by round: each gateway request against the direct one just before it,
            # so drift in the backend's own speed cancels out.
            "overhead_p50": statistics.median(v - d for v, d in zip(values, direct, strict=True)),
        }
        for name, values in latencies.items()
    }


# ---------------------------------------------------------------- 3. Zipf workload

TASKS = [
    "reset my password", "change my shipping address", "cancel my order", "track my package",
    "return a damaged laptop", "update my credit card", "delete my account",
    "change the email on my account", "apply a discount code", "get an invoice for my order",
    "contact customer support", "upgrade my warranty", "pair my wireless headphones",
    "turn on two-factor authentication", "unsubscribe from the newsletter",
    "change my delivery date", "exchange a phone for a different color", "check my order status",
    "add a gift message to my order", "find my order number", "download my receipts",
    "report a missing package", "change my username", "set up automatic payments",
    "redeem a gift card", "cancel my subscription", "reactivate my account",
    "update my phone number", "change the language of the website", "request a refund",
    "find the nearest store", "book a repair appointment", "extend my return window",
    "split a payment between two cards", "change my billing address", "install the mobile app",
    "transfer my warranty", "recycle my old laptop", "order a replacement charger",
    "get a price match", "join the loyalty program", "check my loyalty points",
    "pick up an order in store", "change my password", "add a second user to my account",
    "reset my router", "update the firmware on my TV", "connect my printer to wifi",
    "speed up my old laptop", "back up my phone",
]  # fmt: skip

FORMS = [
    "How do I {t}?",
    "how can i {t}",
    "What is the way to {t}?",
    "Can you tell me how to {t}?",
]


async def zipf_workload(
    svc: Services, model: str, requests: int, concurrency: int, *, seed: int = 7
) -> dict[str, Any]:
    """Zipf(1.0)-distributed support questions, each asked in one of four phrasings."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(TASKS))]
    plan = [
        (task, rng.randrange(len(FORMS)))
        for task in rng.choices(range(len(TASKS)), weights=weights, k=requests)
    ]
    before = _backend_requests(svc.backend)
    tokens_before = _backend_counter(svc.backend, "sluice_backend_generated_tokens_total")
    outcomes: Counter[str] = Counter()
    served_from: list[tuple[int, str]] = []  # (task asked, entry that answered) of semantic hits
    host, port = _host_port(svc.gateway)
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker() -> None:
        async with RawHTTP(host, port) as http:
            while not queue.empty():
                task, form = queue.get_nowait()
                text = FORMS[form].format(t=TASKS[task])
                status, headers, _ = await http.post("/v1/chat/completions", _chat(model, text, 16))
                outcomes[headers.get("x-cache", "?") if status == 200 else str(status)] += 1
                if headers.get("x-cache") == "semantic":
                    served_from.append((task, headers["x-cache-entry"]))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    after = _backend_requests(svc.backend)
    answered = after.get("ok", 0.0) - before.get("ok", 0.0)
    dropped = after.get("cancelled", 0.0) - before.get("cancelled", 0.0)
    tokens = _backend_counter(svc.backend, "sluice_backend_generated_tokens_total") - tokens_before
    asked_as = {
        FORMS[f].format(t=TASKS[t]): t for t in range(len(TASKS)) for f in range(len(FORMS))
    }
    entry_task = {e["entry_id"]: asked_as.get(e["question"]) for e in _entries(svc.gateway)}
    wrong = sum(1 for task, entry in served_from if entry_task.get(entry) != task)
    return {
        "wrong_semantic": wrong,
        "requests": requests,
        "seconds": elapsed,
        "outcomes": dict(outcomes),
        "backend_answered": answered,
        "backend_dropped": dropped,
        "backend_tokens": tokens,
        "never_answered": 1 - answered / requests,
        "exact_ceiling": 1 - len(set(plan)) / requests,
        "meaning_ceiling": 1 - len({t for t, _ in plan}) / requests,
    }


def _entries(url: str) -> list[dict[str, Any]]:
    """Every cache entry the gateway lists (entry id and question)."""
    out: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = httpx.get(
            url + "/admin/cache/entries",
            params={"offset": offset, "limit": 1000},
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=30,
        ).json()
        out += page["data"]
        offset = page["next_offset"]
    return out


def _backend_requests(url: str) -> dict[str, float]:
    """The backend's request counts by outcome (ok, cancelled, ...)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        found = re.match(r'sluice_backend_requests_total\{outcome="(\w+)"\} (\S+)', line)
        if found:
            counts[found[1]] = counts.get(found[1], 0.0) + float(found[2])
    return counts


def _backend_counter(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# ---------------------------------------------------------------- report


def render_hits(hits: list[dict[str, float]]) -> list[str]:
    lines = [
        "**Cache-hit serving** (exact hits only, one uvicorn worker, keep-alive HTTP/1.1 "
        "clients in the same process; targets: p50 < 2 ms at 1 client, > 1,500 req/s at 32)",
        "",
        "| clients | requests | answered as exact hits | req/s | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in hits:
        lines.append(
            f"| {row['clients']:.0f} | {row['requests']:.0f} | {row['hit_share']:.1%} | "
            f"{row['rps']:,.0f} | {row['p50']:.2f} | {row['p99']:.2f} |"
        )
    return lines


def render_misses(misses: dict[str, dict[str, float]], model: str) -> list[str]:
    lines = [
        f"**Miss overhead** (unique questions one at a time, backend `{model}` preset with "
        "max_tokens=1, each round asking every path in turn; overhead = median over rounds "
        "of the path's latency minus the direct request's; target < 3 ms)",
        "",
        "| path | p50 ms | p99 ms | overhead p50 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, row in misses.items():
        lines.append(
            f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['overhead_p50']:+.2f} |"
        )
    return lines


def render_zipf(zipf: dict[str, Any]) -> list[str]:
    out = zipf["outcomes"]
    return [
        f"**Mixed workload**: {zipf['requests']} support questions drawn Zipf(1.0) from "
        f"{len(TASKS)} tasks, each asked in one of {len(FORMS)} phrasings, 8 concurrent clients, "
        f"{zipf['seconds']:.1f} s.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| exact hits / semantic hits / misses | {out.get('hit', 0)} / "
        f"{out.get('semantic', 0)} / {out.get('miss', 0)} |",
        f"| semantic hits answered with another task's answer | {zipf['wrong_semantic']} |",
        f"| requests the backend answered | {zipf['backend_answered']:.0f} |",
        f"| upstream calls dropped for a semantic hit (cancelled in the backend) | "
        f"{zipf['backend_dropped']:.0f} |",
        f"| tokens the backend generated | {zipf['backend_tokens']:.0f} |",
        f"| **share of requests the backend did not answer** | **{zipf['never_answered']:.1%}** |",
        f"| ceiling for an exact-only cache (repeats of the same wording) | "
        f"{zipf['exact_ceiling']:.1%} |",
        f"| ceiling for a perfect meaning match (repeats of the same task) | "
        f"{zipf['meaning_ceiling']:.1%} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run; does not write docs")
    parser.add_argument(
        "--only", choices=("hits", "misses", "zipf"), help="one part only; does not write docs"
    )
    parser.add_argument("--model", default="demo", help="backend model preset or path")
    args = parser.parse_args(argv)
    seconds, rounds, requests = (2.0, 15, 200) if args.quick else (8.0, 150, 1000)
    parts = [args.only] if args.only else ["hits", "misses", "zipf"]
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as log:
        log_path = log.name
    lines: list[str] = []
    try:
        with services(args.model, log_path) as svc:
            if "hits" in parts:
                lines += [*render_hits(asyncio.run(hit_serving(svc, args.model, seconds))), ""]
            if "misses" in parts:
                misses = asyncio.run(miss_overhead(svc, args.model, rounds))
                lines += [*render_misses(misses, args.model), ""]
            if "zipf" in parts:
                lines += render_zipf(asyncio.run(zipf_workload(svc, args.model, requests, 8)))
                lines += [""]
    except Exception:
        with open(log_path) as log_file:
            print(log_file.read()[-3000:], file=sys.stderr)
        raise
    os.unlink(log_path)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines.append(
        f"Load average (1, 5, 15 min) at the end of the run: {load} on "
        f"{os.cpu_count()} cores; the client, the gateways, the backend and Redis share them."
    )
    markdown = "\n".join(lines)
    print(markdown)
    print(f"\nReproduce: {reproduce_command()}")
    if not args.quick and not args.only:
        write_section("gateway", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
