"""The verifier's training examples (the training itself runs once per machine)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cache.semantic.corpus import Pair
from cache.semantic.train_verifier import other_questions, training_examples
from tests.cache.fakes import DIM, bag_of_words


class BagOfWords:
    """An Encoder whose similarity is word overlap."""

    dim = DIM

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([bag_of_words(t) for t in texts])


def pair(id: str, a: str, b: str, label: int = 1, domain: str = "shop") -> Pair:
    return Pair(id=id, domain=domain, lang="en", a=a, b=b, label=label, kind="paraphrase")


def test_each_need_meets_the_nearest_other_need_of_its_domain_as_a_negative() -> None:
    train = [
        pair("1", "how do I reset my password", "password reset how"),
        pair("2", "how do I delete my account", "close my account please"),
        pair("3", "how do I reset my password", "reset pw"),  # the same need again
        pair("4", "do you ship to France", "ship to france?", label=0),  # a near miss
        pair("5", "how do I reset my router", "router reset", domain="isp"),  # alone there
    ]
    negatives = other_questions(train, BagOfWords())
    assert ("how do I reset my password", "how do I delete my account", 0) in negatives
    assert ("how do I reset my password", "close my account please", 0) in negatives
    assert ("how do I delete my account", "how do I reset my password", 0) in negatives
    assert all(label == 0 for _, _, label in negatives)
    # Never the same need, never a near miss's question, never across domains.
    assert not any(a == b for a, b, _ in negatives)
    assert not any("France" in a or "France" in b for a, b, _ in negatives)
    assert not any("router" in a or "router" in b for a, b, _ in negatives)
    examples = training_examples(train, BagOfWords())
    assert len(examples) == 2 * (len(train) + len(negatives))
