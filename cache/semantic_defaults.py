"""Tuned defaults for the semantic cache: the similarity thresholds the guard was measured with.

Chosen by `python bench/semantic_eval.py` on the development set
(../shared/data/semantic_dev_pairs.jsonl, all-MiniLM-L6-v2, cosine of normalised embeddings):
the pair of thresholds with the highest recall among those whose precision with the guard is
at least 0.99, preferring the higher thresholds when several give the same recall. The
figures behind them are in docs/BENCHMARKS.md (section semantic_eval) and
docs/semantic-guard.md. Re-run the benchmark and update these when the embedder changes.
"""

from __future__ import annotations

from typing import Final

# A cached question is a candidate only when its cosine similarity to the new one is at least
# this; the guard then decides.
DEFAULT_SIMILARITY_THRESHOLD: Final[float] = 0.36

# Questions that say the same things in different words (the guard finds several scattered
# word changes, none of them answer-changing by its rules) must be at least this similar.
DEFAULT_REWORDED_MIN_SIMILARITY: Final[float] = 0.85
