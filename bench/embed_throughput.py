"""Semantic lookups per second at 32 concurrent, embedding runtimes compared in pairs.

bench/cache.py's throughput loop (32 clients asking dev-set questions not stored verbatim, each
embedded and its candidates verified; the dev set's paraphrase pairs cached on the local
Redis), one cache per runtime in one process, taking turns
run after run so that load from other processes falls on all of them alike. Prints medians
of lookups/s and of process CPU ms per lookup, and each runtime's ratio to the first.

    .venv/bin/python -m bench.embed_throughput [--rounds 6] [--duration 2.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from contextlib import AsyncExitStack

from bench.cache import (
    NAMESPACE,
    REDIS_DB,
    REDIS_URL,
    answer,
    bench_throughput,
    body,
    load_questions,
    throughput_queries,
)
from bench.embedders import int8_one_session
from cache.embedder import Encoder, MicroBatchEmbedder, load_encoder
from cache.redis_client import connect_redis
from cache.response_cache import ResponseCache


def runtimes() -> dict[str, Encoder]:
    intra = int8_one_session(threads=2)
    return {
        "onnx, 2 threads": load_encoder("onnx", threads=2),
        "onnx-int8, 2 lanes": load_encoder("onnx-int8", threads=2),
        "onnx-int8, 1 session of 2 threads": intra,
        "onnx-int8, 1 lane": load_encoder("onnx-int8", threads=1),
    }


async def compare(rounds: int, duration: float) -> list[str]:
    pairs, texts = load_questions()
    queries = throughput_queries(texts, {a for a, _ in pairs}, 200_000)
    encoders = runtimes()
    redis = connect_redis(f"{REDIS_URL}/{REDIS_DB}", timeout_s=5.0)
    prefix = f"benchtp-{uuid.uuid4().hex[:8]}"
    rate: dict[str, list[float]] = {name: [] for name in encoders}
    cpu: dict[str, list[float]] = {name: [] for name in encoders}
    batch: dict[str, list[float]] = {name: [] for name in encoders}
    try:
        async with AsyncExitStack() as stack:
            caches = {}
            for n, (name, encoder) in enumerate(encoders.items()):
                caches[name] = await stack.enter_async_context(
                    ResponseCache(
                        redis,
                        embedder=MicroBatchEmbedder(encoder),
                        key_prefix=f"{prefix}-{n}",
                        op_timeout_s=2.0,
                    )
                )
                for a, _ in pairs:
                    await caches[name].store(NAMESPACE, "chat", body(a), answer(a))
                await bench_throughput(caches[name], queries, 32, 0.5)  # warm up
            for _ in range(rounds):
                for name, cache in caches.items():
                    c = time.process_time()
                    got = await bench_throughput(cache, queries, 32, duration)
                    spent = time.process_time() - c
                    rate[name].append(got["lookups_per_s"])
                    cpu[name].append(spent * 1e3 / (got["lookups_per_s"] * duration))
                    batch[name].append(got["mean_batch"])
    finally:
        async for key in redis.scan_iter(match=f"{prefix}-*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    first = next(iter(encoders))
    lines = [
        "| runtime | lookups/s, median (min-max) | ratio to first, median of pairs "
        "| CPU ms per lookup | mean batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in encoders:
        ratio = statistics.median(a / b for a, b in zip(rate[name], rate[first], strict=True))
        lines.append(
            f"| {name} | {statistics.median(rate[name]):.0f} ({min(rate[name]):.0f}-"
            f"{max(rate[name]):.0f}) | {ratio:.2f} | {statistics.median(cpu[name]):.2f} "
            f"| {statistics.median(batch[name]):.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=2.5, help="seconds per run")
    args = parser.parse_args()
    print("\n".join(asyncio.run(compare(args.rounds, args.duration))))


if __name__ == "__main__":
    main()
