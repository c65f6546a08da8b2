"""Embedding runtimes compared: torch, ONNX Runtime and its int8 variant, 1 and 2 threads.

int8 with 2 threads means two lanes (groups of a batch run in parallel on one single-threaded
session); "2 intra-op" is the same model on one session of 2 threads instead, and "dynamic
int8" the previous variant (bench/int8_quality.py), one text per call, as the comparison.

Every candidate is loaded in one process and timed in turn, round after round, so that load
from other processes falls on all of them alike; one question at a time (dev-set questions)
and batches of 32 distinct questions. Prints a markdown table (docs/cache.md has one).

    .venv/bin/python -m bench.embedders              # 15 rounds
    .venv/bin/python -m bench.embedders --rounds 5
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.cache import load_questions
from bench.int8_quality import dynamic_int8, one_per_call
from cache.embedder import Matrix, SentenceTransformerEncoder
from cache.onnx_encoder import OnnxEncoder

Encode = Callable[[Sequence[str]], Matrix]


def int8_one_session(threads: int) -> OnnxEncoder:
    """onnx-int8 as one session of `threads` intra-op threads instead of lanes, to compare."""
    import onnxruntime as ort

    encoder = OnnxEncoder(threads=1, int8=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    encoder._session = ort.InferenceSession(
        str(encoder.exported.model_file(int8=True)), options, providers=["CPUExecutionProvider"]
    )
    return encoder


def candidates(tmp: Path) -> dict[str, Encode]:
    """The runtimes and thread counts to compare (torch's threads are set per call)."""
    import torch

    st = SentenceTransformerEncoder()

    def on_torch(threads: int) -> Encode:
        def encode(texts: Sequence[str]) -> Matrix:
            torch.set_num_threads(threads)
            return st.encode(texts)

        return encode

    intra = int8_one_session(threads=2)
    return {
        "torch, 1": on_torch(1),
        "torch, 2": on_torch(2),
        "onnx, 1": OnnxEncoder(threads=1).encode,
        "onnx, 2": OnnxEncoder(threads=2).encode,
        "onnx-int8, 1": OnnxEncoder(threads=1, int8=True).encode,
        "onnx-int8, 2 lanes": OnnxEncoder(threads=2, int8=True).encode,
        "onnx-int8, 2 intra-op": intra.encode,
        "dynamic int8, 1": one_per_call(dynamic_int8(tmp)),
        "onnx, 2, spinning": OnnxEncoder(threads=2, spinning=True).encode,
    }


def compare(rounds: int, tmp: Path) -> list[str]:
    _, texts = load_questions()
    rng = random.Random(0)
    batches = [
        [f"{rng.choice(texts)} ({rng.randrange(10**5)})" for _ in range(32)] for _ in range(2)
    ]
    encoders = candidates(tmp)
    one: dict[str, list[float]] = {name: [] for name in encoders}
    batch: dict[str, list[float]] = {name: [] for name in encoders}
    cpu: dict[str, list[float]] = {name: [] for name in encoders}
    one_cpu: dict[str, list[float]] = {name: [] for name in encoders}
    for encode in encoders.values():  # warm up
        encode(batches[0])
        encode(texts[:1])
    for r in range(rounds):
        for name, encode in encoders.items():
            for i in range(10):
                t, c = time.perf_counter(), time.process_time()
                encode([texts[(r * 10 + i) % len(texts)]])
                one[name].append((time.perf_counter() - t) * 1e3)
                one_cpu[name].append((time.process_time() - c) * 1e3)
            for b in batches:
                t, c = time.perf_counter(), time.process_time()
                encode(b)
                batch[name].append((time.perf_counter() - t) * 1e3)
                cpu[name].append((time.process_time() - c) * 1e3)
            time.sleep(0.05)  # spinning threads spin on after a call: don't bill the next one
    lines = [
        "| runtime, threads | one question p50 / best ms | one question CPU ms "
        "| batch of 32 p50 / best ms | batch of 32 CPU ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in encoders:
        lines.append(
            f"| {name} | {statistics.median(one[name]):.1f} / {min(one[name]):.1f} "
            f"| {statistics.median(one_cpu[name]):.1f} "
            f"| {statistics.median(batch[name]):.0f} / {min(batch[name]):.0f} "
            f"| {statistics.median(cpu[name]):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    # As the backend runs torch; the gateway leaves OpenMP's default.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(compare(args.rounds, Path(tmp))))


if __name__ == "__main__":
    main()
