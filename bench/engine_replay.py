"""Window vs continuous batching on the torch engine, replayed in virtual time.

The HTTP benchmark (bench/batching.py) measures wall-clock time, which on a shared machine
moves with whatever else runs. This replay drives the engine directly with the same seeded
Poisson arrivals and prompts as bench/batching.py, and its clock advances only by the engine
thread's CPU time (one torch thread) plus the idle gaps between arrivals, which cost nothing
to wait out. Each rate runs window mode (the batcher's rule: a batch closes `--window-ms`
after its oldest request arrived, or at `--max-rows`) and continuous mode (the batcher's
admission rule, backend/admission.py, on the virtual clock) on the same arrivals, so every
request's latency can be compared pairwise. HTTP, the event loop and thread wake-ups are
left out: this isolates the engine's scheduling and compute. CPU time is steadier than wall
time on a busy machine, but it still moves with other load (shared caches and memory
bandwidth): `--repeats` runs several pairs one after the other and shows the spread.

    python -m bench.engine_replay                          # 1, 4, 16 req/s, 150 requests each
    python -m bench.engine_replay --rates 1 --requests 400 --window-ms 50
    python -m bench.engine_replay --rates 16 --requests 64 --repeats 3   # the noise, too
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.admission import ArrivalRate, hold_back
from backend.engines.base import Row, RowOutput, SamplingParams
from backend.engines.torch_engine import TorchEngine
from bench.batching import OUTPUT_TOKENS, poisson_arrivals, prompt_ids


class VirtualClock:
    """Seconds of engine-thread CPU time, plus the idle gaps jumped over."""

    def __init__(self) -> None:
        self.now = 0.0
        self._mark = time.thread_time()

    def tick(self) -> float:
        mark = time.thread_time()
        self.now += mark - self._mark
        self._mark = mark
        return self.now

    def wait_until(self, moment: float) -> None:
        self.now = max(self.tick(), moment)


@dataclass(frozen=True, kw_only=True)
class Replay:
    """Per request (in arrival order): end-to-end latency, time to first token, its tokens."""

    e2e: np.ndarray
    ttft: np.ndarray
    tokens: list[tuple[int, ...]]
    tok_per_s: float


def make_rows(count: int, seed: int) -> list[Row]:
    """The prompts bench/batching.py sends for this seed, greedy, OUTPUT_TOKENS each."""
    rng = random.Random(seed)
    params = SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0, ignore_eos=True)
    return [
        Row(request_id=str(i), prompt_token_ids=prompt_ids(rng), params=params)
        for i in range(count)
    ]


def replay(
    engine: TorchEngine, arrivals: Sequence[float], rows: Sequence[Row], *, mode: str,
    window_s: float, max_rows: int,
) -> Replay:  # fmt: skip
    """Serves `rows` arriving at `arrivals` in `mode` ("window" or "continuous")."""
    clock = VirtualClock()
    first: dict[str, float] = {}
    end: dict[str, float] = {}
    tokens: dict[str, tuple[int, ...]] = {}
    waiting = list(range(len(arrivals)))

    def emit(out: RowOutput) -> None:
        now = clock.tick()
        first.setdefault(out.request_id, now)
        tokens[out.request_id] = tokens.get(out.request_id, ()) + out.token_ids
        if out.finish_reason is not None:
            end[out.request_id] = now

    def arrived(limit: int) -> list[Row]:
        now = clock.tick()
        taken: list[Row] = []
        while waiting and arrivals[waiting[0]] <= now and len(taken) < limit:
            taken.append(rows[waiting.pop(0)])
        return taken

    if mode == "continuous":
        rate = ArrivalRate()
        seen = 0

        def admit(free: int, idle: bool, pass_cost_s: float = 0.0) -> list[Row]:
            # The batcher's rule (backend/admission.py), on the virtual clock.
            nonlocal seen
            if idle and waiting:
                clock.wait_until(arrivals[waiting[0]])
            now = clock.tick()
            while seen < len(arrivals) and arrivals[seen] <= now:
                rate.record(arrivals[seen])
                seen += 1
            waits = [now - arrivals[i] for i in waiting[:free] if arrivals[i] <= now]
            if hold_back(
                waits, free=free, live=max_rows - free, pass_cost_s=pass_cost_s,
                arrival_rate=rate.per_second(now),
            ):  # fmt: skip
                return []
            return arrived(free)

        engine.run_continuous(admit, emit, max_rows=max_rows)
    else:
        while waiting:
            close = arrivals[waiting[0]] + window_s
            if len(waiting) >= max_rows:
                close = min(close, arrivals[waiting[max_rows - 1]])
            clock.wait_until(close)
            engine.run_batch(arrived(max_rows), emit)
    ids = [str(i) for i in range(len(arrivals))]
    span = max(end.values()) - arrivals[0]
    return Replay(
        e2e=np.array([end[i] - a for i, a in zip(ids, arrivals, strict=True)]),
        ttft=np.array([first[i] - a for i, a in zip(ids, arrivals, strict=True)]),
        tokens=[tokens[i] for i in ids],
        tok_per_s=sum(len(t) for t in tokens.values()) / span,
    )


def describe(name: str, r: Replay) -> str:
    p50, p90, p99 = (np.percentile(r.e2e, q) * 1e3 for q in (50, 90, 99))
    ttft = np.percentile(r.ttft, 50) * 1e3
    latency = f"e2e p50/p90/p99 {p50:.0f}/{p90:.0f}/{p99:.0f} ms, TTFT p50 {ttft:.0f} ms"
    return f"{name}: {latency}, {r.tok_per_s:.0f} tok/s"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="1,4,16", help="offered loads, requests/s")
    p.add_argument("--requests", type=int, default=150, help="requests per rate")
    p.add_argument("--window-ms", type=float, default=20)
    p.add_argument("--max-rows", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="as bench/batching.py's --seed")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="window/continuous pairs per rate, one after the other; CPU time still moves\n"
        "with other load (caches, memory bandwidth), and the spread of the pairs shows how much",
    )
    args = p.parse_args(argv)
    engine = TorchEngine.load("bench", threads=1)
    with torch.inference_mode():
        engine.run_batch(make_rows(4, -1), lambda out: None)  # first-call costs
    for i, rate in enumerate(sorted(float(r) for r in args.rates.split(","))):
        # Seeded per rate index, like bench/batching.py, so the arrivals and prompts are its own.
        arrivals = poisson_arrivals(rate, args.requests, random.Random(args.seed + i))
        print(f"{rate:g} req/s, {len(arrivals)} requests")
        p99_diffs = []
        for _ in range(args.repeats):
            window, continuous = (
                replay(
                    engine, arrivals, make_rows(len(arrivals), args.seed + i), mode=mode,
                    window_s=args.window_ms / 1000, max_rows=args.max_rows,
                )
                for mode in ("window", "continuous")
            )  # fmt: skip
            print_pair(window, continuous, args.window_ms)
            p99_diffs.append(
                float(np.percentile(continuous.e2e, 99) - np.percentile(window.e2e, 99))
            )
        if len(p99_diffs) > 1:
            diffs = np.array(p99_diffs) * 1e3
            print(
                f"  e2e p99, continuous minus window, over {len(diffs)} pairs: median "
                f"{np.median(diffs):+.0f} ms, from {diffs.min():+.0f} to {diffs.max():+.0f} ms",
                flush=True,
            )


def print_pair(window: Replay, continuous: Replay, window_ms: float) -> None:
    diff = (continuous.e2e - window.e2e) * 1e3
    same = sum(a == b for a, b in zip(window.tokens, continuous.tokens, strict=True))
    print("  " + describe(f"window {window_ms:g} ms", window))
    print("  " + describe("continuous", continuous))
    print(
        f"  paired e2e, continuous minus window: median {np.median(diff):+.0f} ms, "
        f"continuous slower for {int((diff > 0).sum())} of {len(diff)}; "
        f"identical outputs {same} of {len(diff)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
