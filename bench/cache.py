"""Cache benchmark: exact and semantic lookup latency, throughput under concurrency, index cost.

Runs ResponseCache against the Redis at REDIS_URL (database 11, keys under a unique prefix,
removed at the end) with the real all-MiniLM-L6-v2 embedder (the gateway's default runtime and
thread count unless --embed-backend / --embed-threads say otherwise) and the trained verifier
(cache/semantic/verifier.py, as the gateway loads it). The semantic index is filled with random
unit vectors in the queries' own scope (the worst case: every first-turn question of one chatbot
shares a scope), plus real questions from ../shared/data/semantic_dev_pairs.jsonl stored through
the cache; queries are real text. The throughput loop asks the dev questions that are not stored
verbatim, with no suffix, so that their stored neighbours reach the verifier's model (a suffix
with a number would have the hard cues refuse every candidate first).

    .venv/bin/python -m bench.cache            # full run (1k/10k/100k), writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.cache --quick    # short check (1k/10k), prints only
    .venv/bin/python -m bench.cache --no-write # full run, prints only
    .venv/bin/python -m bench.cache --quick --embed-backend torch --embed-threads 2
    .venv/bin/python -m bench.cache --quick --no-write --stand-in-encoder  # the cache's own CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_section
from cache.embedder import (
    DEFAULT_THREADS,
    ENCODER_BACKENDS,
    Encoder,
    Matrix,
    MicroBatchEmbedder,
    load_encoder,
    resolve_backend,
)
from cache.hnsw import HnswGraph, hnswlib_available
from cache.identity import identify
from cache.keys import namespace_hash
from cache.redis_client import RedisClient, connect_redis
from cache.response_cache import ResponseCache
from cache.semantic.verifier import ModelVerifier
from cache.vector_index import DEFAULT_HNSW_MIN_ENTRIES, ScopedIndex
from gateway.settings import GatewaySettings

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 11
DEV_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic_dev_pairs.jsonl"
NAMESPACE = "bench"
MODEL = "bench-model"
FAR = time.time() + 10 * 86_400


def body(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def answer(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"message": {"content": text}}]}


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def load_questions() -> tuple[list[tuple[str, str]], list[str]]:
    """(stored, paraphrase) pairs to hit, and every distinct question (for unique queries)."""
    pairs, texts = [], []
    for line in DEV_PAIRS.read_text().splitlines():
        row = json.loads(line)
        texts += [row["a"], row["b"]]
        if row["label"] == 1:
            pairs.append((row["a"], row["b"]))
    return pairs, sorted(set(texts))


def unique_queries(texts: list[str], n: int, tag: str) -> list[str]:
    """n distinct real questions (a suffix keeps repeats from hitting the embedding memo)."""
    rng = random.Random(tag)
    return [f"{rng.choice(texts)} ({tag} {i})" for i in range(n)]


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


async def bench_exact(cache: ResponseCache, n: int) -> dict[str, float]:
    bodies = [body(f"exact question {i}") for i in range(200)]
    for b in bodies:
        await cache.store(NAMESPACE, "chat", b, answer("x"))
    hits, misses = [], []
    for i in range(n):
        b = bodies[i % len(bodies)]
        t = time.perf_counter()
        hit = await cache.lookup(NAMESPACE, "chat", b, semantic=False)
        hits.append((time.perf_counter() - t) * 1e3)
        assert hit is not None
        await asyncio.gather(*cache._background)  # the hit-count update, outside the timing
        t = time.perf_counter()
        await cache.lookup(NAMESPACE, "chat", body(f"absent {i}"), semantic=False)
        misses.append((time.perf_counter() - t) * 1e3)
    return {
        "hit_p50": pct(hits, 50),
        "hit_p99": pct(hits, 99),
        "miss_p50": pct(misses, 50),
        "miss_p99": pct(misses, 99),
    }


async def bench_semantic(
    cache: ResponseCache, pairs: list[tuple[str, str]], texts: list[str], n: int, tag: str
) -> dict[str, float]:
    """Sequential lookups: half paraphrases of stored questions, half other questions."""
    samples, kinds = [], {"semantic": 0, "exact": 0, "miss": 0}
    others = unique_queries(texts, n, tag)
    for i in range(n):
        text = pairs[i % len(pairs)][1] + ("" if i < len(pairs) else f" ({tag} {i})")
        query = text if i % 2 == 0 else others[i]
        t = time.perf_counter()
        hit = await cache.lookup(NAMESPACE, "chat", body(query))
        samples.append((time.perf_counter() - t) * 1e3)
        kinds[hit.kind if hit else "miss"] += 1
        cache._recent_vectors.clear()  # every lookup pays for its embedding
    return {"p50": pct(samples, 50), "p99": pct(samples, 99), **kinds}


class StandInEncoder:
    """Serves each throughput question its vector computed beforehand (the model ran before
    the loop), so that the throughput loop measures the cache's own work."""

    def __init__(self, encoder: Encoder, texts: list[str]) -> None:
        self.dim = encoder.dim
        self.vectors = dict(zip(texts, encoder.encode(texts), strict=True))

    def encode(self, texts: Sequence[str]) -> Matrix:
        return np.stack([self.vectors[t] for t in texts])


def throughput_queries(texts: list[str], stored: set[str], n: int) -> list[str]:
    """n dev questions, none stored verbatim (no exact hits), in a seeded random order."""
    asked = sorted(set(texts) - stored)
    rng = random.Random("tp")
    return [rng.choice(asked) for _ in range(n)]


async def bench_throughput(
    cache: ResponseCache,
    queries: list[str],
    concurrency: int,
    duration_s: float,
    stand_in: StandInEncoder | None = None,
) -> dict[str, float]:
    """`concurrency` clients doing semantic lookups back to back, each embedding its question
    (the memo of recent vectors is emptied before every lookup) and verifying its candidates."""
    embedder = cache.embedder
    assert isinstance(embedder, MicroBatchEmbedder)
    verifier = cache.verifier if isinstance(cache.verifier, ModelVerifier) else None
    encoder = embedder.encoder
    if stand_in is not None:
        embedder.encoder = stand_in
    batches0, texts0 = embedder.batches, embedder.texts
    vbatches0, pairs0 = (verifier.batches, verifier.pairs) if verifier else (0, 0)
    done = hits = 0
    cpu = time.process_time()
    stop = time.perf_counter() + duration_s

    async def client(k: int) -> None:
        nonlocal done, hits
        i = k
        while time.perf_counter() < stop:
            cache._recent_vectors.clear()
            hit = await cache.lookup(NAMESPACE, "chat", body(queries[i % len(queries)]))
            done += 1
            hits += hit is not None
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    embedder.encoder = encoder
    batches = embedder.batches - batches0
    out = {
        "lookups_per_s": done / elapsed,
        "mean_batch": (embedder.texts - texts0) / max(1, batches),
        "tp_hits": hits / max(1, done),
    }
    if verifier is not None:
        pairs = verifier.pairs - pairs0
        out["pairs_per_lookup"] = pairs / max(1, done)
        out["mean_verify_batch"] = pairs / max(1, verifier.batches - vbatches0)
    if stand_in is not None:  # this process's CPU, model left out: the cache's own cost
        out["cpu_us_per_lookup"] = cpu / max(1, done) * 1e6
    return out


def raw_search(
    vectors: np.ndarray, queries: np.ndarray, graph: HnswGraph | None, id_prefix: str
) -> dict[str, float]:
    """Exact numpy search against HNSW on the same vectors: latency and recall@1."""
    exact_t, hnsw_t, agree = [], [], 0
    for q in queries:
        t = time.perf_counter()
        sims = vectors @ q
        best = int(np.argmax(sims))
        exact_t.append((time.perf_counter() - t) * 1e3)
        if graph is not None:
            t = time.perf_counter()
            found = graph.search(q, 4)
            hnsw_t.append((time.perf_counter() - t) * 1e3)
            agree += bool(found) and found[0][0] == f"{id_prefix}{best}"
    out = {"exact_p50": pct(exact_t, 50), "exact_p99": pct(exact_t, 99)}
    if hnsw_t:
        out |= {
            "hnsw_p50": pct(hnsw_t, 50),
            "hnsw_p99": pct(hnsw_t, 99),
            "recall": agree / len(queries),
        }
    return out


def index_memory(dim: int, n: int) -> dict[str, float]:
    """Bytes per entry: the exact partition as traced by tracemalloc, the HNSW graph as laid out."""
    vectors = random_unit(n, dim, seed=3)
    exact = ScopedIndex(dim, hnsw_min_entries=None)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        exact.add(f"{'0' * 16}.{i:032x}", "scope", vectors[i], FAR)
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    out = {"exact_bytes": traced / n}
    if hnswlib_available():
        graph = HnswGraph(dim, n)
        graph.add_many([f"{i}" for i in range(min(n, 2000))], vectors[: min(n, 2000)])
        out["hnsw_bytes"] = graph.memory_bytes() / n
    return out


def model_alone(encoder: Encoder, texts: list[str]) -> dict[str, float]:
    """The embedding model by itself, for one text and for a batch of 32, during this run."""
    one, batch = [], []
    for i in range(20):
        t = time.perf_counter()
        encoder.encode([texts[i]])
        one.append((time.perf_counter() - t) * 1e3)
    for i in range(5):
        t = time.perf_counter()
        encoder.encode(texts[32 * i : 32 * (i + 1)])
        batch.append((time.perf_counter() - t) * 1e3)
    return {"one_p50": pct(one, 50), "batch32_p50": pct(batch, 50)}


async def run(args: argparse.Namespace) -> str:
    pairs, texts = load_questions()
    args.embed_backend = resolve_backend(args.embed_backend)
    if args.embed_threads is None:
        args.embed_threads = DEFAULT_THREADS[args.embed_backend]
    encoder = load_encoder(args.embed_backend, threads=args.embed_threads)
    print(f"encoder: {args.embed_backend}, {args.embed_threads} thread(s)")
    prefix = f"benchcache-{uuid.uuid4().hex[:8]}"
    redis: RedisClient = connect_redis(f"{REDIS_URL}/{REDIS_DB}", timeout_s=5.0)
    index = ScopedIndex(encoder.dim)
    lines: list[str] = []
    try:
        async with ResponseCache(
            redis,
            embedder=MicroBatchEmbedder(encoder),
            key_prefix=prefix,
            index=index,
            op_timeout_s=2.0,
            max_entries_per_namespace=1_000_000,
        ) as cache:
            exact = await bench_exact(cache, args.exact_n)
            print(f"exact lookup: {exact}")
            model = model_alone(encoder, texts)
            print(f"model alone: {model}")
            memory = index_memory(encoder.dim, 20_000)
            print(f"index memory: {memory}")
            for a, _ in pairs:
                await cache.store(NAMESPACE, "chat", body(a), answer(a))
            queries = throughput_queries(texts, {a for a, _ in pairs}, 200_000)
            # The partition the lookups search: the request's scope narrowed by the language
            # gate to the question's language and path (an English question's, like all here).
            query = await cache._semantic_query(identify(NAMESPACE, "chat", body(pairs[0][0])))
            assert query is not None
            scope = query.scope
            nsh = namespace_hash(NAMESPACE)
            stand_in = StandInEncoder(encoder, texts) if args.stand_in_encoder else None
            fill = random_unit(max(args.sizes), encoder.dim, seed=7)
            probes = fill[:200] + random_unit(200, encoder.dim, seed=8) * 0.05
            probes /= np.linalg.norm(probes, axis=1, keepdims=True)
            rows = []
            for size in args.sizes:
                # As at a restart: the index is rebuilt from Redis, then the random fill is
                # added; a scope past the switch-over gets its HNSW graph built in the background.
                t = time.perf_counter()
                await cache.sync.rebuild()
                filled = max(0, size - len(index))
                for i in range(filled):
                    index.add(f"{nsh}.f{i}", scope, fill[i], FAR)
                graph_wait = 0.0
                if size >= DEFAULT_HNSW_MIN_ENTRIES and hnswlib_available():
                    while index.graphs_ready() == 0:
                        await asyncio.sleep(0.2)
                    graph_wait = time.perf_counter() - t
                sem = await bench_semantic(cache, pairs, texts, args.semantic_n, f"s{size}")
                tp = await bench_throughput(cache, queries, 32, args.duration, stand_in)
                tp["load"] = os.getloadavg()[0]  # other work on the cores skews every figure
                # Exact-vs-HNSW on the same vectors; below the switch-over build a graph here.
                graph = None
                if hnswlib_available() and size < DEFAULT_HNSW_MIN_ENTRIES:
                    t = time.perf_counter()
                    graph = HnswGraph(encoder.dim, filled)
                    graph.add_many([f"{nsh}.f{i}" for i in range(filled)], fill[:filled])
                    graph_wait = time.perf_counter() - t
                elif hnswlib_available():
                    graph = _graph_of(index, scope)
                raw = raw_search(fill[:filled], probes, graph, f"{nsh}.f")
                row = {"size": size, "build": graph_wait, **sem, **tp, **raw}
                row["outages"] = cache.failopen.outages
                print(row)
                rows.append(row)
            lines = report(exact, rows, model, memory, args)
            if cache.failopen.outages:
                lines.append(
                    f"\nRedis timed out {cache.failopen.outages} time(s) during the run (fail-open "
                    "misses are included in the figures)."
                )
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    return "\n".join(lines)


def _graph_of(index: ScopedIndex, scope: str) -> HnswGraph | None:
    """The live HNSW graph of a scope (to time it alone)."""
    part = index._partitions.get(scope)
    return part.graph if part is not None else None


def report(
    exact: dict[str, float],
    rows: list[dict[str, Any]],
    model: dict[str, float],
    memory: dict[str, float],
    args: argparse.Namespace,
) -> list[str]:
    out = [
        "Exact lookups (in-process, local Redis, hit = one HGET, hit count updated after):",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| exact hit | {exact['hit_p50']:.3f} | {exact['hit_p99']:.3f} |",
        f"| exact miss | {exact['miss_p50']:.3f} | {exact['miss_p99']:.3f} |",
        "",
        "Semantic lookups including embedding (exact miss, embed, search the scope, fetch",
        "candidates, verifier), one at a time: every other lookup a paraphrase of a stored",
        "question, the rest other questions; past the first round of pairs every question",
        "carries a numbered suffix, which makes the hard cues refuse each candidate before the",
        "model. Throughput with 32 concurrent clients asking dev questions not stored verbatim,",
        "each embedded and its candidates verified (pairs the verifier's model scored per",
        "lookup, and per model call):",
        "",
        f"(embedding runtime: {args.embed_backend}, {args.embed_threads} thread(s); the model "
        f"alone took {model['one_p50']:.1f} ms for one text and {model['batch32_p50']:.1f} ms "
        "for a batch of 32, p50, during this run)",
        "",
        "| entries in scope | p50 ms | p99 ms | semantic hits / lookups | lookups/s at 32 "
        "| hits at 32 | mean embed batch | verifier pairs per lookup | mean verifier batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["semantic"] + r["exact"] + r["miss"]
        out.append(
            f"| {r['size']:,} | {r['p50']:.2f} | {r['p99']:.2f} | {r['semantic']}/{n} | "
            f"{r['lookups_per_s']:.0f} | {r['tp_hits']:.0%} | {r['mean_batch']:.1f} | "
            f"{r.get('pairs_per_lookup', float('nan')):.2f} | "
            f"{r.get('mean_verify_batch', float('nan')):.1f} |"
        )
    loads = " / ".join(f"{r['load']:.1f}" for r in rows)
    out += [
        "",
        f"1-minute load average after each size's throughput run: {loads} on "
        f"{os.cpu_count()} cores (above the core count, other work shared the machine).",
    ]
    out += [
        "",
        "Nearest-neighbour search alone, one scope, 384-d float32, 200 queries near stored",
        "vectors:",
        "",
        "| entries | numpy exact p50 / p99 ms | HNSW p50 / p99 ms | HNSW recall@1 | HNSW build s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        hnsw = (
            f"{r['hnsw_p50']:.3f} / {r['hnsw_p99']:.3f} | {r['recall']:.3f} | {r['build']:.1f}"
            if "hnsw_p50" in r
            else "n/a | n/a | n/a"
        )
        out.append(f"| {r['size']:,} | {r['exact_p50']:.3f} / {r['exact_p99']:.3f} | {hnsw} |")
    hnsw_mem = memory.get("hnsw_bytes")
    out += [
        "",
        f"Index memory per entry: exact partition {memory['exact_bytes']:,.0f} bytes (tracemalloc,"
        " vector + expiry + id maps)"
        + (
            f"; an HNSW graph adds {hnsw_mem:,.0f} bytes (hnswlib's layout: vector + links)."
            if hnsw_mem
            else "."
        ),
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run, prints only")
    parser.add_argument("--no-write", action="store_true", help="don't update docs/BENCHMARKS.md")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--exact-n", type=int, default=5000)
    parser.add_argument("--semantic-n", type=int, default=300)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    gateway = GatewaySettings.model_fields
    parser.add_argument(
        "--embed-backend",
        default=gateway["embed_backend"].default,
        choices=ENCODER_BACKENDS,
        help="embedding runtime (default: the gateway's)",
    )
    parser.add_argument(
        "--embed-threads",
        type=int,
        default=gateway["embed_threads"].default,
        help="embedding threads (default: the gateway's default for the runtime)",
    )
    parser.add_argument(
        "--stand-in-encoder",
        action="store_true",
        help="throughput loop without the model (precomputed vectors): the cache's own CPU",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.quick:
        args.sizes, args.exact_n, args.semantic_n, args.duration = "1000,10000", 500, 60, 2.0
    args.sizes = [int(s) for s in args.sizes.split(",")]
    markdown = asyncio.run(run(args))
    print(markdown)
    if not (args.quick or args.no_write):
        write_section("cache", markdown)


if __name__ == "__main__":
    main()
