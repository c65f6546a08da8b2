"""Trains the small-talk model (cache/semantic/small_talk.py) beside the verifier.

A logistic regression over the embedder's vectors of labelled exchanges
(cache/semantic/corpus/small_talk.jsonl, written by writers who never saw this code), fitted
on the train split's domains and calibrated on the dev split's: the lowest probability
threshold at which at least MIN_PRECISION of the exchanges called small talk are. A turn
wrongly skipped could serve a wrong answer; one wrongly kept only costs a miss.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cache.embedder import Encoder
from cache.semantic.corpus import SMALL_TALK, small_talk_split
from cache.semantic.small_talk import SMALL_TALK_FILE, SmallTalkModel, exchange_text

log = logging.getLogger("sluice.cache")

LANGUAGES = ("en",)
MIN_PRECISION = 0.99
# L2 penalty (chosen by dev recall among 1e-4, 1e-3, 1e-2) and steps of the fit.
L2 = 1e-4
STEPS = 500


def _vectors(encoder: Encoder, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    texts = [exchange_text(r["user"], r["assistant"]) for r in rows]
    labels = np.array([int(r["small_talk"]) for r in rows], dtype=np.float32)
    return np.asarray(encoder.encode(texts), dtype=np.float32), labels


def fit(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights and bias by L-BFGS on the mean cross-entropy plus an L2 penalty."""
    import torch

    x = torch.from_numpy(vectors)
    y = torch.from_numpy(labels)
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=STEPS, line_search_fn="strong_wolfe")
    loss_of = torch.nn.BCEWithLogitsLoss()

    def closure() -> Any:
        optimiser.zero_grad()
        loss = loss_of(x @ weights + bias, y) + L2 * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    return weights.detach().numpy().astype(np.float32), float(bias.item())


def calibrate(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(threshold, precision, recall): the lowest threshold meeting MIN_PRECISION."""
    best = (1.0 + 1e-6, 1.0, 0.0)  # above every probability: nothing is skipped
    positives = max(1, int(labels.sum()))
    for cut in np.unique(probabilities)[::-1]:
        called = probabilities >= cut
        right = int((called & (labels == 1)).sum())
        precision = right / int(called.sum())
        if precision < MIN_PRECISION:
            break  # lower cuts only add more of what broke it, or recall at worse precision
        best = (float(cut), precision, right / positives)
    return best


def train(folder: Path, encoder: Encoder, *, path: Path = SMALL_TALK) -> dict[str, Any]:
    """Fits, calibrates and writes small_talk.json into the verifier's `folder`."""
    x_train, y_train = _vectors(encoder, small_talk_split("train", path))
    x_dev, y_dev = _vectors(encoder, small_talk_split("dev", path))
    weights, bias = fit(x_train, y_train)
    model = SmallTalkModel(weights, bias, 1.0, LANGUAGES, {})
    threshold, precision, recall = calibrate(model.probabilities(x_dev), y_dev)
    meta = {
        "weights": [float(w) for w in weights],
        "bias": bias,
        "threshold": threshold,
        "languages": list(LANGUAGES),
        "dev": {"exchanges": len(y_dev), "precision": precision, "recall": recall},
        "train": {"exchanges": len(y_train)},
    }
    (folder / SMALL_TALK_FILE).write_text(json.dumps(meta))
    log.info("small-talk model: dev precision %.3f, recall %.3f", precision, recall)
    return {"small_talk": {k: v for k, v in meta.items() if k not in ("weights", "bias")}}
