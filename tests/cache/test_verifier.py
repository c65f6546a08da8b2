"""The verifier: hard cues, and the trained pair classifier against its calibrated threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.semantic.rules import cue_mismatch
from cache.semantic.verifier import ModelVerifier, PairClassifier


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("Does Quillon 3 support Python 3.8?", "does quillon 3 support python 3.12"),
        ("Can I pay at 14:30?", "Can I pay at 16:30?"),
        ("متى يصل الطلب رقم ٣؟", "متى يصل الطلب رقم 4؟"),  # Arabic-Indic digits count
        ("What does git push --force do?", "What does git push --force-with-lease do?"),
        ("How do I use replaceAll in JavaScript?", "How do I use replace in JavaScript?"),
        ('What does "net 30" mean on my invoice?', 'What does "net 60" mean on my invoice?'),
    ],
)
def test_hard_cues_refuse_pairs_whose_numbers_or_identifiers_differ(cached: str, new: str) -> None:
    assert cue_mismatch(cached, new) is not None


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("Do you ship to Germany?", "can u deliver to germany"),
        ("What is Python 3.12?", "what's python 3.12"),
        ("متى يصل الطلب رقم ٣؟", "متى يصل الطلب رقم 3؟"),
        ("HOW DO I CHECK MY ORDER STATUS", "how do i check my order status"),
    ],
)
def test_hard_cues_let_rewordings_through(cached: str, new: str) -> None:
    assert cue_mismatch(cached, new) is None


@pytest.fixture(scope="module")
def verifier(trained_verifier: Path) -> ModelVerifier:
    return ModelVerifier.load(trained_verifier)


def test_the_calibration_is_stored_beside_the_model(verifier: ModelVerifier) -> None:
    calibration = verifier.calibration
    assert calibration.languages == ("en",)
    assert 0.4 <= calibration.similarity_threshold <= 0.8
    assert calibration.dev["precision"] >= 0.99 and calibration.dev["recall"] > 0.0


async def test_the_verifier_allows_a_rewording_and_refuses_another_question(
    verifier: ModelVerifier,
) -> None:
    same = await verifier.verify(
        "How do I reset my password?", "how do i reset my password", similarity=0.99, language="en"
    )
    assert same.allowed and same.score is not None and same.score >= verifier.min_score
    other = await verifier.verify(
        "How do I reset my password?",
        "Are you open on Sunday afternoons?",
        similarity=0.95,
        language="en",
    )
    assert not other.allowed and other.score is not None and other.score < verifier.min_score
    opposite = await verifier.verify(
        "How do I open a savings account?",
        "How do I close a savings account?",
        similarity=0.95,
        language="en",
    )
    assert not opposite.allowed and opposite.reason == "only 'open' / 'close' differ"


async def test_languages_it_was_not_calibrated_for_are_refused(verifier: ModelVerifier) -> None:
    verdict = await verifier.verify(
        "Wie spät ist es?", "Wie spät ist es", similarity=1.0, language="de"
    )
    assert not verdict.allowed and verdict.score is None


async def test_hard_cues_are_checked_before_the_model(verifier: ModelVerifier) -> None:
    verdict = await verifier.verify(
        "Is there a fee for 2 bags?", "Is there a fee for 3 bags?", similarity=0.98, language="en"
    )
    assert not verdict.allowed and verdict.reason == "numbers differ" and verdict.score is None


def test_scores_do_not_depend_on_batch_mates(trained_verifier: Path) -> None:
    classifier = PairClassifier(trained_verifier)
    pair = ("How much does a replacement card cost?", "what's the fee for a new card")
    alone = classifier.scores([pair])[0]
    together = classifier.scores([pair, ("hi", "a much longer question about something else")])[0]
    assert abs(alone - together) < 1e-4
