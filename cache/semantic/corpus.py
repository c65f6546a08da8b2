"""The labelled evaluation corpus of the semantic cache, split by domain.

cache/semantic/corpus/ holds question pairs written by people who never saw the cache's
code (see its README.md). Whole domains go to one split, so a verifier tuned on banking and
travel is scored on telecom and insurance: a figure from the test split is a figure on
phrasings and topics nothing was tuned on. The verifier is trained on "train" and calibrated
on "dev" (cache/semantic/train_verifier.py); "test" is scored only to report
(bench/semantic_corpus_eval.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CORPUS = Path(__file__).parent / "corpus"
# The team's 300 shared development pairs (../shared/data/semantic_dev_pairs.jsonl), copied
# into the package so that training is the same with or without ../shared beside it.
SHARED_DEV = CORPUS / "shared_dev.jsonl"
# Labelled exchanges (a user turn and the reply): small talk or not (small_talk.py).
SMALL_TALK = CORPUS / "small_talk.jsonl"
Split = Literal["train", "dev", "test"]
# English test domains written after the verifier of 2026-12-03 was trained and
# calibrated, only to score it.
LATER_TEST = (
    *("dental_clinic", "car_rental", "event_ticketing", "moving_company", "coworking_space"),
    *("solar_installer", "language_school", "photography_studio", "bike_shop"),
    "pharmacy_delivery",
)
SPLITS: dict[str, tuple[str, ...]] = {
    # After the first five of train and dev: English only, written later by other writers.
    "train": (
        *("banking", "travel", "utilities", "it_support", "cooking"),
        *("real_estate", "automotive", "gaming", "pets", "fitness", "streaming"),
    ),
    "dev": (
        *("retail", "health", "government", "software", "general"),
        *("legal_services", "hospitality", "parcel_delivery", "public_library"),
    ),
    "test": (
        *("telecom", "insurance", "hr", "education", "sport"),
        *LATER_TEST,
    ),
}
LANGUAGES = ("en", "zh", "ja", "ar", "ru", "hi", "es", "de", "fr")


@dataclass(frozen=True, kw_only=True)
class Pair:
    """Two questions and whether one answer fits both (label 1)."""

    id: str
    domain: str
    lang: str
    a: str
    b: str
    label: int
    kind: str
    sub: str = ""
    # Earlier turns of each conversation (empty for single questions).
    history_a: tuple[dict[str, str], ...] = field(default=())
    history_b: tuple[dict[str, str], ...] = field(default=())


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _pair(row: dict[str, Any], **defaults: str) -> Pair:
    return Pair(
        id=row["id"],
        domain=row.get("domain", defaults.get("domain", "")),
        lang=row.get("lang", defaults.get("lang", "en")),
        a=row["a"],
        b=row["b"],
        label=int(row["label"]),
        kind=row["kind"],
        sub=row.get("sub") or "",
        history_a=tuple(row.get("history_a", ())),
        history_b=tuple(row.get("history_b", ())),
    )


def pairs(split: Split, *, languages: tuple[str, ...] = LANGUAGES) -> list[Pair]:
    """Single-question pairs of a split's domains, in the languages asked for."""
    out = []
    for domain in SPLITS[split]:
        out += [p for p in map(_pair, _read(CORPUS / f"{domain}.jsonl")) if p.lang in languages]
    return out


def conversations(split: Split) -> list[Pair]:
    """Multi-turn pairs of a split's domains."""
    rows = map(_pair, _read(CORPUS / "conversations.jsonl"))
    return [p for p in rows if p.domain in SPLITS[split]]


def shared_dev() -> list[Pair]:
    """The team's 300 English development pairs (electronics store, a docs assistant, small
    talk), written by another writer in another style: the verifier trains on them."""
    return [_pair(row, domain="shared", lang="en") for row in _read(SHARED_DEV)]


def small_talk_split(split: Split, path: Path = SMALL_TALK) -> list[dict[str, Any]]:
    """Labelled exchanges of a split's domains: those in no split's list train."""
    named = {d for domains in SPLITS.values() for d in domains}
    rows = list(_read(path))
    if split == "train":
        return [r for r in rows if r["domain"] in SPLITS["train"] or r["domain"] not in named]
    return [r for r in rows if r["domain"] in SPLITS[split]]
