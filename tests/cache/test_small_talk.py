"""The small-talk model: which history exchanges the semantic scope may leave out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache.embedder import MicroBatchEmbedder, load_encoder
from cache.semantic.language import english_gate
from cache.semantic.small_talk import SmallTalkFilter, SmallTalkModel
from cache.semantic.train_small_talk import MIN_PRECISION, calibrate
from cache.semantic.verifier import ModelVerifier
from tests.cache.conftest import CacheFactory, answer
from tests.cache.fakes import FakeEmbedder, OpenGate


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def test_calibration_takes_the_lowest_threshold_that_keeps_precision() -> None:
    probabilities = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 1, 1, 0, 1, 1])
    threshold, precision, recall = calibrate(probabilities, labels)
    # Going down to 0.8 would call a non-small-talk exchange small talk: 3/4 < MIN_PRECISION.
    assert threshold == pytest.approx(0.9)
    assert precision >= MIN_PRECISION
    assert recall == pytest.approx(3 / 5)


def test_calibration_skips_nothing_when_no_threshold_is_precise_enough() -> None:
    threshold, _, recall = calibrate(np.array([0.9, 0.8]), np.array([0, 1]))
    assert threshold > 0.9 and recall == 0.0


def always(small_talk: bool) -> SmallTalkModel:
    """A model whose every verdict is `small_talk` (weights 0, bias far to one side), for
    every language OpenGate names."""
    bias = 50.0 if small_talk else -50.0
    return SmallTalkModel(np.zeros(FakeEmbedder.dim, np.float32), bias, 0.5, ("any",), {})


async def test_only_plain_text_user_turns_answered_by_plain_text_are_skipped() -> None:
    history = [
        {"role": "system", "content": "You are a bank's assistant."},
        user("hi!"),
        assistant("Hello! How can I help?"),
        user("thanks"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "1", "content": "ok"},
        user([{"type": "text", "text": "cheers"}]),  # type: ignore[arg-type]
        assistant("Any time!"),
    ]
    skipped = await SmallTalkFilter(always(True), FakeEmbedder(), OpenGate()).skipped(history)
    assert skipped == {1, 2}


async def test_nothing_is_skipped_when_the_model_says_it_carries_information() -> None:
    small_talk = SmallTalkFilter(always(False), FakeEmbedder(), OpenGate())
    assert await small_talk.skipped([user("hi!"), assistant("Hello!")]) == set()


@pytest.fixture(scope="module")
def trained(trained_verifier: Path) -> SmallTalkModel:
    model = SmallTalkModel.read(trained_verifier)
    assert model is not None, "training writes small_talk.json beside the verifier"
    return model


@pytest.mark.slow
async def test_the_trained_model_skips_greetings_and_keeps_facts(trained: SmallTalkModel) -> None:
    assert trained.dev["precision"] >= MIN_PRECISION
    async with MicroBatchEmbedder(load_encoder("onnx")) as embedder:
        small_talk = SmallTalkFilter(trained, embedder, english_gate())
        greeting = [user("hello there!"), assistant("Hi! How can I help you today?")]
        fact = [
            user("I'm flying Economy Light to Frankfurt next week."),
            assistant("Economy Light fares include one cabin bag but no checked baggage."),
        ]
        chinese = [user("你好！"), assistant("你好！有什么可以帮您？")]
        assert await small_talk.skipped(greeting) == {0, 1}
        assert await small_talk.skipped(fact) == set()
        # A language without a semantic path is never read, so never skipped.
        assert await small_talk.skipped(chinese) == set()


def conversation(*turns: str) -> dict[str, Any]:
    """A chat body: alternating user and assistant turns, ending with the user's question."""
    messages = [(user if i % 2 == 0 else assistant)(t) for i, t in enumerate(turns)]
    return {"model": "m", "messages": messages}


async def test_skipped_exchanges_leave_the_scope_but_never_the_exact_key(
    make_cache: CacheFactory,
) -> None:
    cache = await make_cache(small_talk=always(True))
    await cache.store("ns", "chat", conversation("how do I reset my password"), answer("A"))
    greeted = conversation("hi!", "Hello!", "how do I reset my password")
    hit = await cache.lookup("ns", "chat", greeted)
    assert hit is not None and hit.kind == "semantic"  # not exact: the bodies differ
    plain = await make_cache(small_talk=None)
    await plain.store("other", "chat", conversation("how do I reset my password"), answer("A"))
    assert await plain.lookup("other", "chat", greeted) is None


@pytest.mark.slow
async def test_the_real_cache_serves_across_small_talk_but_not_across_contexts(
    make_cache: CacheFactory, trained: SmallTalkModel, trained_verifier: Path
) -> None:
    cache = await make_cache(
        embedder=MicroBatchEmbedder(load_encoder("onnx")),
        verifier=ModelVerifier.load(trained_verifier),
        language_gate=english_gate(),
        small_talk=trained,
    )
    about_lisbon = (
        "I have a booking at your Lisbon hotel for 12 May.",
        "Thanks, I found your reservation for a double room from 12 to 15 May.",
    )
    about_porto = (
        "I have a booking at your Porto hotel for 12 May.",
        "Thanks, I found your reservation for a twin room from 12 to 15 May.",
    )
    thanks = ("wow that was quick, thanks!", "Happy to help!")
    await cache.store(
        "ns", "chat", conversation(*about_lisbon, "What time is check-in?"), answer("3 pm")
    )
    chatty = conversation(*about_lisbon, *thanks, "What time is check-in?")
    hit = await cache.lookup("ns", "chat", chatty)
    assert hit is not None and hit.kind == "semantic"
    other_hotel = conversation(*about_porto, "What time is check-in?")
    assert await cache.lookup("ns", "chat", other_hotel) is None
