"""Tuned defaults for the semantic cache: the similarity thresholds the guard was measured with.

Chosen by `python bench/semantic_eval.py` on the development set
(../shared/data/semantic_dev_pairs.jsonl) and the extra pairs
(bench/data/semantic_holdout_pairs.jsonl), all-MiniLM-L6-v2, cosine of normalised embeddings:
the threshold with the highest recall among those whose precision with the guard is at least
0.99 on both sets and that alone keep out at least two thirds of the related and unrelated
pairs (so a guard mistake is not the only defence), the higher one on ties. The
figures behind them are in docs/BENCHMARKS.md (section semantic_eval) and
docs/semantic-guard.md. Re-run the benchmark and update these when the embedder changes.
"""

from __future__ import annotations

from typing import Final

# A cached question is a candidate only when its cosine similarity to the new one is at least
# this; the guard then decides. Typos lower the cosine a lot with this embedder ("retrun
# policy" scores 0.63 against "return policy"), which is why it is not higher.
DEFAULT_SIMILARITY_THRESHOLD: Final[float] = 0.57

# Questions that say the same things in different words (the guard finds several scattered
# word changes, none of them answer-changing by its rules) must be at least this similar.
DEFAULT_REWORDED_MIN_SIMILARITY: Final[float] = 0.85
