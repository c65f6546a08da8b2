"""How far int8 moves the embeddings, and whether that changes what the cache serves.

For every question of the development pairs and the extra pairs: cosine of each runtime's
vector to torch's (mean, 1st percentile, worst), and whether a text's vector depends on its
batch (worst cosine between a text embedded alone and in a batch of 32). Runtimes: `onnx`
(fp32), `onnx-int8` (per-token activations, cache/onnx_quantize.py), and ONNX Runtime's
dynamic quantisation (the previous int8, per-channel weights, one scale per call), one text per
call as it had to run and in groups for comparison. Then how far each runtime moves the
cosine of the labelled pairs (what the similarity threshold is compared with); what the
cache serves end to end is measured by bench/semantic_eval.py.

    .venv/bin/python -m bench.int8_quality
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cache.embedder import Matrix, SentenceTransformerEncoder
from cache.onnx_encoder import OnnxEncoder
from cache.semantic.corpus import Pair, pairs, shared_dev

Encode = Callable[[Sequence[str]], Matrix]


def dynamic_int8(folder: Path, threads: int = 1) -> OnnxEncoder:
    """The previous int8 variant: quantize_dynamic, per-channel int8 weights, per-call scale."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    encoder = OnnxEncoder(threads=threads)
    target = folder / "model_dynamic_int8.onnx"
    if not target.is_file():
        quantize_dynamic(
            encoder.exported.model_file(), target, weight_type=QuantType.QInt8, per_channel=True
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    encoder._session = ort.InferenceSession(
        str(target), options, providers=["CPUExecutionProvider"]
    )
    return encoder


def one_per_call(encoder: OnnxEncoder) -> Encode:
    return lambda texts: np.concatenate([encoder.encode([t]) for t in texts])


def questions() -> tuple[list[Pair], list[str]]:
    """The English dev pairs (the corpus's and the shared set) and their questions."""
    dev = [*pairs("dev", languages=("en",)), *shared_dev()]
    return dev, sorted({q for p in dev for q in (p.a, p.b)})


def in_batches(encode: Encode, texts: list[str], size: int = 32) -> Matrix:
    """Each text embedded among 31 others, as a busy cache would (random batch mates)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    out = np.empty((len(texts), 384), dtype=np.float32)
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        out[rows] = encode([texts[i] for i in rows])
    return out


def measure(tmp: Path) -> list[str]:
    dev, texts = questions()
    torch_rows = in_batches(SentenceTransformerEncoder().encode, texts)
    dynamic = dynamic_int8(tmp)
    runtimes: dict[str, Encode] = {
        "onnx": OnnxEncoder().encode,
        "onnx-int8 (per-token, in groups)": OnnxEncoder(int8=True).encode,
        "dynamic int8, one text per call (before)": one_per_call(dynamic),
        "dynamic int8, in groups": dynamic.encode,
    }
    lines = [
        f"{len(texts)} questions (English dev pairs); cosine to torch's vector:",
        "",
        "| runtime | mean | 1st percentile | worst | alone vs in a batch of 32, worst |",
        "|---|---:|---:|---:|---:|",
    ]
    vectors: dict[str, Matrix] = {}
    for name, encode in runtimes.items():
        rows = vectors[name] = in_batches(encode, texts)
        solo = np.concatenate([encode([t]) for t in texts[:200]])
        cos = np.sum(rows * torch_rows, axis=1)
        stable = float(np.min(np.sum(solo * rows[:200], axis=1)))
        lines.append(
            f"| {name} | {cos.mean():.5f} | {np.percentile(cos, 1):.5f} | {cos.min():.5f} "
            f"| {stable:.6f} |"
        )
    lines += [
        "",
        "Pair cosines moved against torch's (mean / max):",
        "",
        "| vectors | moved, mean / max |",
        "|---|---|",
    ]
    reference = _pair_cosines(dev, dict(zip(texts, torch_rows, strict=True)))
    for name, rows in vectors.items():
        moved = np.abs(_pair_cosines(dev, dict(zip(texts, rows, strict=True))) - reference)
        lines.append(f"| {name} | {moved.mean():.4f} / {moved.max():.4f} |")
    return lines


def _pair_cosines(dev: list[Pair], vectors: dict[str, Any]) -> Any:
    return np.array([float(vectors[p.a] @ vectors[p.b]) for p in dev])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(measure(Path(tmp))))


if __name__ == "__main__":
    main()
