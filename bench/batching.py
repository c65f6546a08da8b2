"""Backend batching benchmark: throughput and latency against offered load, per server setup.

Starts each server configuration as a subprocess on a loopback port, drives it over HTTP
with Poisson arrivals at several rates (and one all-at-once burst), 32 prompt tokens and
32 output tokens per request (`ignore_eos`, greedy), and reports output tokens/s,
requests/s, TTFT and end-to-end latency p50/p99, and the mean batch size the backend
formed (read from its /metrics). Configurations are entries of SERVERS, so other engines
or servers are compared by adding an entry.

    python -m bench.batching                 # issue set: no batching vs three windows
    python -m bench.batching --quick         # short smoke run; writes nothing unless --write
    python -m bench.batching --servers all   # every entry, including vLLM ones

Every rate gets at least --min-requests requests (its arrival span grows to fit), so a low
rate's p99 does not rest on a handful of samples. Arrival times and prompts are seeded per
rate, so every server sees exactly the same load and the comparison is paired.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.report import reproduce_command, write_section

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "img" / "batching.png"
PROMPT_TOKENS = 32
OUTPUT_TOKENS = 32
# Token ids for prompts: inside every preset's vocabulary, clear of special tokens.
TOKEN_RANGE = (300, 4000)
# A rate whose achieved requests/s fall below this share of the offered rate is saturated;
# one more rate is run after the first saturated one, higher ones are skipped.
SATURATED = 0.7


def request_count(rate: float, seconds: float, max_requests: int, min_requests: int) -> int:
    """Requests sent at `rate`: about `seconds` worth, capped, but never fewer than the floor."""
    return max(min_requests, min(max_requests, round(rate * seconds)))


@dataclass(frozen=True, kw_only=True)
class Server:
    """One configuration to compare: how to start it, and how to talk to it."""

    key: str
    label: str
    argv: Callable[[int], list[str]]
    model: str = "bench"
    sluice_metrics: bool = True
    env: dict[str, str] = field(default_factory=dict)


def sluice(key: str, label: str, **flags: str | int | float) -> Server:
    """A Sluice backend started with `python -m backend` and these flags."""

    def argv(port: int) -> list[str]:
        args = [sys.executable, "-m", "backend", "--model", "bench", "--port", str(port)]
        args += ["--timeout-s", "3600", "--max-queue", "100000", "--log-level", "warning"]
        for name, value in flags.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        return args

    return Server(key=key, label=label, argv=argv)


def vllm_openai_server(key: str, label: str) -> Server:
    """vLLM's own OpenAI server on the same model, as the reference."""

    def argv(port: int) -> list[str]:
        from backend.demo_model import ensure_demo_model

        path = str(ensure_demo_model("bench"))
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
            "--served-model-name", "bench", "--port", str(port), "--host", "127.0.0.1",
            "--enforce-eager", "--max-num-seqs", "32",
        ]  # fmt: skip

    # The same KV cache as the Sluice vLLM engine's CPU default (2 GiB); unset, vLLM on CPU
    # would reserve 90% of RAM.
    env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    return Server(key=key, label=label, argv=argv, sluice_metrics=False, env=env)


SERVERS = [
    sluice("torch-nobatch", "torch, no batching", max_batch_size=1, max_wait_ms=0),
    sluice("torch-window-5", "torch, window 5 ms", max_batch_size=32, max_wait_ms=5),
    sluice("torch-window-20", "torch, window 20 ms", max_batch_size=32, max_wait_ms=20),
    sluice("torch-window-50", "torch, window 50 ms", max_batch_size=32, max_wait_ms=50),
    sluice("torch-continuous", "torch, continuous", max_batch_size=32, batching="continuous"),
    sluice("vllm-window", "vLLM engine, window 20 ms", engine="vllm", max_batch_size=32,
           max_wait_ms=20),
    sluice("vllm-continuous", "vLLM engine, continuous", engine="vllm", max_batch_size=32,
           batching="continuous"),
    vllm_openai_server("vllm-serve", "vLLM's own server"),
]  # fmt: skip
DEFAULT_SERVERS = ("torch-nobatch", "torch-window-5", "torch-window-20", "torch-window-50")
QUICK_SERVERS = ("torch-nobatch", "torch-window-20")


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One request as the client saw it (seconds on the client's monotonic clock)."""

    sent: float
    first: float | None
    end: float
    tokens: int
    error: str | None


@dataclass(frozen=True, kw_only=True)
class Result:
    """The figures of one server under one load."""

    server: str
    load: str
    offered: float | None
    requests: int
    failed: int
    duration_s: float
    req_per_s: float
    tok_per_s: float
    ttft_p50: float
    ttft_p99: float
    e2e_p50: float
    e2e_p99: float
    mean_batch: float | None


# -- load ----------------------------------------------------------------------------------


def poisson_arrivals(rate: float, count: int, rng: random.Random) -> list[float]:
    """Send times (s from start) of a Poisson process at `rate` requests per second."""
    t, times = 0.0, []
    for _ in range(count):
        times.append(t)
        t += rng.expovariate(rate)
    return times


def prompt_ids(rng: random.Random) -> list[int]:
    return [rng.randrange(*TOKEN_RANGE) for _ in range(PROMPT_TOKENS)]


async def one_request(
    client: httpx.AsyncClient, model: str, prompt: list[int], start: float
) -> Sample:
    """Sends one streaming completion at `start` and times its first token and its end."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start - loop.time()))
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": OUTPUT_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent, first, tokens, error = loop.time(), None, 0, None
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}"
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    error = chunk["error"].get("message", "error")
                choices = chunk.get("choices") or []
                if first is None and choices and choices[0].get("text"):
                    first = loop.time()
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Sample(sent=sent, first=first, end=loop.time(), tokens=tokens, error=error)


async def batch_stats(client: httpx.AsyncClient) -> tuple[float, float]:
    """(sum, count) of sluice_backend_batch_size from /metrics."""
    text = (await client.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("sluice_backend_batch_size_sum", "sluice_backend_batch_size_count"):
            values[name] = float(value)
    return values["sluice_backend_batch_size_sum"], values["sluice_backend_batch_size_count"]


async def run_load(
    url: str, server: Server, load: str, offered: float | None, arrivals: Sequence[float],
    seed: int,
) -> Result:  # fmt: skip
    """Runs one load (arrival times) against a started server and summarises it."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(3600, connect=30)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        before = await batch_stats(client) if server.sluice_metrics else None
        start = asyncio.get_running_loop().time() + 0.05
        samples = await asyncio.gather(
            *(one_request(client, server.model, prompt_ids(rng), start + t) for t in arrivals)
        )
        after = await batch_stats(client) if server.sluice_metrics else None
    mean_batch = None
    if before is not None and after is not None and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return summarise(server.label, load, offered, samples, mean_batch)


def summarise(
    label: str, load: str, offered: float | None, samples: Sequence[Sample],
    mean_batch: float | None,
) -> Result:  # fmt: skip
    ok = [s for s in samples if s.error is None]
    duration = max(s.end for s in samples) - min(s.sent for s in samples)
    ttft = [s.first - s.sent for s in ok if s.first is not None]
    e2e = [s.end - s.sent for s in ok]

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    return Result(
        server=label,
        load=load,
        offered=offered,
        requests=len(samples),
        failed=len(samples) - len(ok),
        duration_s=duration,
        req_per_s=len(ok) / duration,
        tok_per_s=sum(s.tokens for s in ok) / duration,
        ttft_p50=pct(ttft, 50),
        ttft_p99=pct(ttft, 99),
        e2e_p50=pct(e2e, 50),
        e2e_p99=pct(e2e, 99),
        mean_batch=mean_batch,
    )


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(server: Server, torch_threads: int, startup_timeout_s: float = 600) -> Iterator[str]:
    """Runs the server as a subprocess until the block ends; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **server.env}
    if torch_threads:
        env["SLUICE_BACKEND_THREADS"] = str(torch_threads)
    with tempfile.NamedTemporaryFile(prefix=f"sluice-bench-{server.key}-") as log:
        proc = subprocess.Popen(
            server.argv(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_healthy(url, proc, Path(log.name), time.monotonic() + startup_timeout_s)
            yield url
        finally:
            stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not become healthy")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the backend drains), then SIGKILL to the process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def warm_up(url: str, server: Server) -> None:
    """A few requests alone and together, so first-call costs stay out of the figures."""
    await run_load(url, server, "warm-up", None, [0.0, 0.0, 0.0, 0.0], seed=-1)
    await run_load(url, server, "warm-up", None, [0.0], seed=-2)


async def bench_server(server: Server, args: argparse.Namespace) -> list[Result]:
    """Every rate (until saturated) and the burst, against one started server."""
    rates = [float(r) for r in args.rates.split(",")]
    seconds, max_requests, burst, seed = args.seconds, args.max_requests, args.burst, args.seed
    results: list[Result] = []
    began = time.monotonic()
    with started(server, args.torch_threads) as url:
        await warm_up(url, server)
        saturated_at: float | None = None
        for i, rate in enumerate(sorted(rates)):
            if saturated_at is not None and rate > saturated_at * 2:
                print(f"  {server.label}: skipping {rate:g} req/s (saturated at {saturated_at:g})")
                continue
            count = request_count(rate, seconds, max_requests, args.min_requests)
            arrivals = poisson_arrivals(rate, count, random.Random(seed + i))
            result = await run_load(url, server, f"{rate:g} req/s", rate, arrivals, seed + i)
            print_row(result)
            results.append(result)
            if saturated_at is None and result.req_per_s < SATURATED * rate:
                saturated_at = rate
        result = await run_load(url, server, f"burst {burst}", None, [0.0] * burst, seed + 99)
        print_row(result)
        results.append(result)
    print(f"  {server.label}: {time.monotonic() - began:.0f} s including start-up", flush=True)
    return results


# -- report --------------------------------------------------------------------------------

HEADER = (
    "| server | load | requests (failed) | req/s | output tok/s | TTFT p50 / p99 (ms) "
    "| e2e p50 / p99 (ms) | mean batch |"
)


def row(r: Result) -> str:
    batch = "n/a" if r.mean_batch is None else f"{r.mean_batch:.1f}"
    return (
        f"| {r.server} | {r.load} | {r.requests} ({r.failed}) | {r.req_per_s:.2f} "
        f"| {r.tok_per_s:.0f} | {r.ttft_p50 * 1e3:.0f} / {r.ttft_p99 * 1e3:.0f} "
        f"| {r.e2e_p50 * 1e3:.0f} / {r.e2e_p99 * 1e3:.0f} | {batch} |"
    )


def print_row(r: Result) -> None:
    print(row(r), flush=True)


def summary(results: Sequence[Result], labels: Sequence[str]) -> list[str]:
    """Peak throughput per server and the comparisons the issue targets are stated in."""
    lines = []
    peak = {
        label: max((r.tok_per_s for r in results if r.server == label), default=0.0)
        for label in labels
    }
    for label in labels:
        lines.append(f"- {label}: peak {peak[label]:.0f} output tok/s")
    base = next((lb for lb in labels if "no batching" in lb), None)
    windows = [lb for lb in labels if "window" in lb and lb.startswith("torch")]
    if base and windows and peak[base] > 0:
        best = max(windows, key=lambda lb: peak[lb])
        lines.append(f"- Saturation throughput, {best} / {base}: {peak[best] / peak[base]:.1f}x")
        low = min((r.offered for r in results if r.offered is not None), default=None)
        if low is not None:
            p50 = {r.server: r.e2e_p50 for r in results if r.offered == low and r.server in labels}
            for lb in windows:
                if lb in p50 and base in p50:
                    extra = (p50[lb] - p50[base]) * 1e3
                    lines.append(
                        f"- At {low:g} req/s, e2e p50 of {lb} minus {base}: {extra:+.0f} ms"
                    )
    continuous = next((lb for lb in labels if lb.startswith("torch") and "continuous" in lb), None)
    if continuous:
        for lb in windows:
            lines.append(paired_p99(results, continuous, lb))
    return lines


def paired_p99(results: Sequence[Result], label: str, other: str) -> str:
    """Per load, e2e p99 of `label` minus `other` (same arrivals), and their peak tok/s."""
    p99 = {(r.server, r.load): r.e2e_p99 for r in results}
    diffs = [
        f"{r.load} {(r.e2e_p99 - p99[(other, r.load)]) * 1e3:+.0f} ms"
        for r in results
        if r.server == label and (other, r.load) in p99
    ]
    peak = {
        lb: max((r.tok_per_s for r in results if r.server == lb), default=0.0)
        for lb in (label, other)
    }
    ratio = peak[label] / peak[other] if peak[other] > 0 else float("nan")
    return f"- e2e p99 of {label} minus {other}: {', '.join(diffs)}; peak output tok/s {ratio:.2f}x"


def plot(results: Sequence[Result], labels: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 8), sharex=True)
    for label in labels:
        rs = sorted(
            (r for r in results if r.server == label and r.offered), key=lambda r: r.offered or 0
        )
        x = [r.offered for r in rs]
        top.plot(x, [r.tok_per_s for r in rs], marker="o", label=label)
        bottom.plot(x, [r.e2e_p99 for r in rs], marker="o", label=label)
    top.set_ylabel("output tokens/s")
    top.set_title(f"{PROMPT_TOKENS} prompt / {OUTPUT_TOKENS} output tokens, Poisson arrivals")
    bottom.set_ylabel("end-to-end latency p99 (s)")
    bottom.set_yscale("log")
    bottom.set_xlabel("offered load (requests/s)")
    for ax in (top, bottom):
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: Sequence[Result], labels: Sequence[str], args: argparse.Namespace) -> str:
    lines = [
        f"Each request: {PROMPT_TOKENS} prompt tokens, {OUTPUT_TOKENS} output tokens "
        "(`ignore_eos`, greedy), streamed. Model: built-in `bench` preset. Poisson arrivals "
        f"for about {args.seconds:g} s per rate (at most {args.max_requests} requests, but at "
        f"least {args.min_requests}, so low rates run longer), the same seeded arrivals and "
        f"prompts for every server, then a burst of {args.burst} at once. A p99 over n "
        "requests lies between the two slowest when n <= 100. "
        "Rates past twice the first saturated rate are "
        "skipped. Mean batch is from the backend's `sluice_backend_batch_size` (in continuous "
        "mode: rows admitted together between two steps, not rows per step). "
        f"Torch threads per backend: {args.torch_threads or 'torch default'}; the load "
        "generator runs on the same machine. " + args.load_note,
        "",
        *summary(results, labels),
        "",
        HEADER,
        "|" + "---|" * 8,
        *(row(r) for r in results),
        "",
        f"![throughput and p99 latency against offered load](img/{PLOT.name})",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help="comma-separated keys, or `all`: " + ", ".join(s.key for s in SERVERS),
    )
    p.add_argument("--rates", default="1,2,4,8,16,32,64", help="offered loads, requests/s")
    p.add_argument("--seconds", type=float, default=15, help="arrival span per rate")
    p.add_argument("--max-requests", type=int, default=256, help="cap per rate")
    p.add_argument(
        "--min-requests",
        type=int,
        default=40,
        help="floor per rate (wins over --max-requests): low rates run longer,\n"
        "so their p99 is not the slowest of a handful",
    )
    p.add_argument("--burst", type=int, default=64, help="requests sent at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per backend (SLUICE_BACKEND_THREADS); 0: torch's default.\n"
        "The load generator shares the machine, so by default torch gets one core.",
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (2 servers, 2 rates)")
    p.add_argument("--write", action="store_true", help="with --quick: still write the docs")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.quick:
        if args.servers == ",".join(DEFAULT_SERVERS):
            args.servers = ",".join(QUICK_SERVERS)
        args.rates, args.seconds, args.max_requests, args.burst = "1,8", 3.0, 24, 16
        args.min_requests = min(args.min_requests, 8)
    return args  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keys = [s.key for s in SERVERS] if args.servers == "all" else args.servers.split(",")
    by_key = {s.key: s for s in SERVERS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise SystemExit(f"unknown servers: {unknown}; known: {list(by_key)}")
    servers = [by_key[k] for k in keys]
    print(HEADER)
    results: list[Result] = []
    loads = [os.getloadavg()[0]]
    for server in servers:
        results += asyncio.run(bench_server(server, args))
        loads.append(os.getloadavg()[0])
    args.load_note = (
        f"1-minute load average before and after each server: "
        f"{' / '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores "
        "(above the core count means other work shared the machine)."
    )
    print(args.load_note)
    labels = [s.label for s in servers]
    print()
    print("\n".join(summary(results, labels)))
    print(f"Reproduce: {reproduce_command()}")
    if args.no_write or (args.quick and not args.write):
        return
    plot(results, labels, PLOT)
    write_section("batching", markdown(results, labels, args))
    print(f"wrote docs/BENCHMARKS.md (section batching) and {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
