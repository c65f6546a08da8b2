"""The verifier: decides whether a cached question's answer may serve a new question.

The embedding search proposes candidates; similarity cannot tell "flights to Paris" from
"flights to Lyon", nor "can my son see my records" from "can I see my son's records". The
verifier reads both questions together: hard cues first (cache/semantic/rules.py), then a
pair classifier (a cross-encoder fine-tuned from all-MiniLM-L6-v2 on labelled pairs,
cache/semantic/train_verifier.py) whose threshold was calibrated on pairs it was not
trained on. It runs on ONNX Runtime, like the embedder, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cache.semantic.rules import cue_mismatch

META_FILE = "verifier.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the cached answer may be served, the model's score, and why not."""

    allowed: bool
    score: float | None = None
    reason: str | None = None


class Verifier(Protocol):
    """What the cache asks about each candidate, best first.

    `similarity_threshold` is the cosine a candidate needs to be offered at all: the one the
    verifier was calibrated with.
    """

    @property
    def similarity_threshold(self) -> float: ...

    async def verify(
        self, cached_question: str, new_question: str, *, similarity: float, language: str
    ) -> Verdict: ...


class AllowAll:
    """Similarity alone decides (tests of the rest of the cache, and experiments)."""

    def __init__(self, similarity_threshold: float = 0.9) -> None:
        self.similarity_threshold = similarity_threshold

    async def verify(
        self, cached_question: str, new_question: str, *, similarity: float, language: str
    ) -> Verdict:
        return Verdict(True)


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


class PairClassifier:
    """The exported cross-encoder: a score per (cached, new) question pair; higher means
    the same answer fits both."""

    def __init__(self, folder: Path, *, threads: int = 1, max_length: int = 128) -> None:
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

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(pairs))
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
        logits = self._session.run(None, feed)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(encodings))


class ModelVerifier:
    """Hard cues, then the pair classifier against its calibrated threshold.

    Only languages the classifier was calibrated for are verified; any other is refused,
    so a path added for a new language cannot serve hits before it has been measured.
    """

    def __init__(
        self,
        classifier: PairClassifier,
        calibration: Calibration,
        *,
        min_score: float | None = None,
    ) -> None:
        self.classifier = classifier
        self.calibration = calibration
        self.min_score = calibration.threshold if min_score is None else min_score

    @property
    def similarity_threshold(self) -> float:
        return self.calibration.similarity_threshold

    @classmethod
    def load(cls, folder: Path, *, threads: int = 1) -> ModelVerifier:
        return cls(PairClassifier(folder, threads=threads), Calibration.read(folder))

    async def verify(
        self, cached_question: str, new_question: str, *, similarity: float, language: str
    ) -> Verdict:
        if language not in self.calibration.languages:
            return Verdict(False, reason=f"no verifier calibrated for {language!r}")
        reason = cue_mismatch(cached_question, new_question)
        if reason is not None:
            return Verdict(False, reason=reason)
        pair = [(cached_question, new_question)]
        score = float((await asyncio.to_thread(self.classifier.scores, pair))[0])
        if score < self.min_score:
            return Verdict(False, score, reason="the verifier scores it below its threshold")
        return Verdict(True, score)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sluice" / "verifiers"


def load_verifier(cache_dir: Path | None = None) -> ModelVerifier:
    """The trained verifier from `cache_dir`, trained first (minutes, in a child process)
    when this machine has none for the current corpus and code."""
    from cache.semantic.train_verifier import ensure_trained

    return ModelVerifier.load(ensure_trained(cache_dir or default_cache_dir()))
