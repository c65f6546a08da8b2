"""The verifier: decides whether a cached question's answer may serve a new question.

The embedding search proposes candidates; similarity cannot tell "flights to Paris" from
"flights to Lyon", nor "can my son see my records" from "can I see my son's records". The
verifier reads both questions together: hard cues first (cache/semantic/rules.py), then a
pair classifier (a cross-encoder fine-tuned from all-MiniLM-L6-v2 on labelled pairs,
cache/semantic/train_verifier.py) whose threshold was calibrated on pairs it was not
trained on. It runs on ONNX Runtime, like the embedder, off the event loop, with the pairs
of concurrent lookups scored in one batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cache.microbatch import MicroBatcher
from cache.onnx_encoder import ROWS_PER_RUN, balanced_groups, equal_groups
from cache.semantic.rules import cue_mismatch, same_question

META_FILE = "verifier.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Lanes of the cache's classifier: a batch's groups run on this many threads at once, each on
# one intra-op thread of the same session. At 32 concurrent lookups the verifier was the stage
# lookups queued at (about 22 pairs a call against 4 texts an embedding call); 2 lanes served
# 1.2 to 1.5 times the lookups of 1 lane in each of three paired runs, for no more CPU per
# lookup; one session of 2 intra-op threads served as many in one run and fewer in the next
# (docs/semantic-matching.md).
DEFAULT_LANES = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the cached answer may be served, the model's score, and why not."""

    allowed: bool
    score: float | None = None
    reason: str | None = None


class Verifier(Protocol):
    """What the cache asks about a lookup's candidates: one verdict per cached question, in
    order. All candidates of a lookup come in one call, so a model can score them together.

    `similarity_threshold` is the cosine a candidate needs to be offered at all: the one the
    verifier was calibrated with.
    """

    @property
    def similarity_threshold(self) -> float: ...

    async def verify(
        self,
        cached_questions: Sequence[str],
        new_question: str,
        *,
        similarities: Sequence[float],
        language: str,
    ) -> list[Verdict]: ...


class AllowAll:
    """Similarity alone decides (tests of the rest of the cache, and experiments)."""

    def __init__(self, similarity_threshold: float = 0.9) -> None:
        self.similarity_threshold = similarity_threshold

    async def verify(
        self,
        cached_questions: Sequence[str],
        new_question: str,
        *,
        similarities: Sequence[float],
        language: str,
    ) -> list[Verdict]:
        return [Verdict(True) for _ in cached_questions]


@dataclass(frozen=True)
class Calibration:
    """What training measured: the score threshold and the figures on held-out pairs."""

    threshold: float
    similarity_threshold: float
    languages: tuple[str, ...]
    dev: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> Calibration:
        meta = json.loads((folder / META_FILE).read_text())
        return cls(
            threshold=float(meta["threshold"]),
            similarity_threshold=float(meta["similarity_threshold"]),
            languages=tuple(meta["languages"]),
            dev=dict(meta.get("dev", {})),
        )


class PairScorer(Protocol):
    """Scores question pairs in one synchronous call (the model, or a test's stand-in)."""

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class PairClassifier:
    """The exported cross-encoder: a score per (cached, new) question pair; higher means
    the same answer fits both.

    A call's pairs are sorted by length and run in groups of ROWS_PER_RUN, so a short pair
    is not padded to the longest of a batch gathered from many lookups (the scores do not
    depend on the padding: tests/cache/test_verifier.py). With `lanes` above 1 the groups
    run on that many threads at once (groups cut by cost, as the int8 embedder's are); a
    single group runs on the caller's thread.
    """

    def __init__(
        self, folder: Path, *, threads: int = 1, lanes: int = 1, max_length: int = 128
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.threads, self.lanes = threads, max(1, lanes)
        # Lane 0 is the calling thread; a session may be run from several threads at once.
        self._pool = ThreadPoolExecutor(self.lanes - 1, "verify-lane") if self.lanes > 1 else None

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(pairs))
        out = np.empty(len(encodings), dtype=np.float32)
        lengths = [len(e.ids) for e in encodings]
        runs = min(len(lengths), self.lanes * math.ceil(len(lengths) / (ROWS_PER_RUN * self.lanes)))
        groups = (balanced_groups if self.lanes > 1 else equal_groups)(lengths, runs)

        def run(lane: int) -> None:
            for rows in groups[lane :: self.lanes]:
                logits = self._session.run(None, self._feed([encodings[i] for i in rows]))[0]
                out[rows] = np.asarray(logits, dtype=np.float32).reshape(len(rows))

        if self._pool is None or len(groups) < 2:
            for lane in range(self.lanes):
                run(lane)
        else:
            others = [self._pool.submit(run, lane) for lane in range(1, self.lanes)]
            run(0)
            for future in others:
                future.result()
        return out

    def _feed(self, encodings: Sequence[Any]) -> dict[str, np.ndarray]:
        """Right-padded int64 arrays of a group of pairs."""
        width = max(len(e.ids) for e in encodings)
        feed: dict[str, np.ndarray] = {}
        for name, field in (
            ("input_ids", "ids"),
            ("attention_mask", "attention_mask"),
            ("token_type_ids", "type_ids"),
        ):
            if name in self._inputs:
                array = np.zeros((len(encodings), width), dtype=np.int64)
                for row, encoding in enumerate(encodings):
                    values = getattr(encoding, field)
                    array[row, : len(values)] = values
                feed[name] = array
        return feed


class ModelVerifier:
    """Hard cues, then the pair classifier against its calibrated threshold.

    Only languages the classifier was calibrated for are verified; any other is refused,
    so a path added for a new language cannot serve hits before it has been measured.
    The pairs that reach the classifier are micro-batched across concurrent lookups and
    scored off the event loop (cache/microbatch.py): use as `async with verifier:`
    (ResponseCache enters it). `executor`: where batches run (None: asyncio's default pool).
    """

    def __init__(
        self,
        classifier: PairScorer,
        calibration: Calibration,
        *,
        min_score: float | None = None,
        max_batch_size: int = 64,
        executor: Executor | None = None,
    ) -> None:
        self.classifier = classifier
        self.calibration = calibration
        self.min_score = calibration.threshold if min_score is None else min_score
        self._batcher: MicroBatcher[tuple[str, str], float] = MicroBatcher(
            self._score, max_batch_size=max_batch_size, executor=executor, name="verify-batcher"
        )

    @property
    def similarity_threshold(self) -> float:
        return self.calibration.similarity_threshold

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def pairs(self) -> int:
        """Pairs the classifier has scored (cue-refused ones never reach it)."""
        return self._batcher.items

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        threads: int = 1,
        lanes: int = DEFAULT_LANES,
        executor: Executor | None = None,
    ) -> ModelVerifier:
        classifier = PairClassifier(folder, threads=threads, lanes=lanes)
        return cls(classifier, Calibration.read(folder), executor=executor)

    async def __aenter__(self) -> ModelVerifier:
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._batcher.__aexit__(*exc)

    async def verify(
        self,
        cached_questions: Sequence[str],
        new_question: str,
        *,
        similarities: Sequence[float],
        language: str,
    ) -> list[Verdict]:
        if language not in self.calibration.languages:
            refused = Verdict(False, reason=f"no verifier calibrated for {language!r}")
            return [refused for _ in cached_questions]
        verdicts: list[Verdict | None] = []
        pairs: list[tuple[str, str]] = []
        for cached in cached_questions:
            if same_question(cached, new_question):
                verdicts.append(Verdict(True))
                continue
            reason = cue_mismatch(cached, new_question)
            verdicts.append(None if reason is None else Verdict(False, reason=reason))
            if reason is None:
                pairs.append((cached, new_question))
        if not pairs:
            return [v for v in verdicts if v is not None]
        if not self._batcher.running:
            raise RuntimeError("ModelVerifier used outside `async with`")
        scores = iter(await self._batcher.submit_all(pairs))
        return [v if v is not None else self._judge(next(scores)) for v in verdicts]

    def _judge(self, score: float) -> Verdict:
        if score < self.min_score:
            return Verdict(False, score, reason="the verifier scores it below its threshold")
        return Verdict(True, score)

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [float(s) for s in self.classifier.scores(pairs)]


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sluice" / "verifiers"


def load_verifier(
    cache_dir: Path | None = None,
    *,
    threads: int = 1,
    lanes: int = DEFAULT_LANES,
    executor: Executor | None = None,
) -> ModelVerifier:
    """The trained verifier from `cache_dir`, trained first (minutes, in a child process)
    when this machine has none for the current corpus and code."""
    from cache.semantic.train_verifier import ensure_trained

    folder = ensure_trained(cache_dir or default_cache_dir())
    return ModelVerifier.load(folder, threads=threads, lanes=lanes, executor=executor)
