"""The semantic cache as users meet it, scored on the independently written corpus.

Every pair goes through a real ResponseCache (in-process Redis, the embedder, the language
gate, the hard cues and the trained verifier): `a` is stored with its conversation, `b` is
looked up, and a semantic hit counts as served. Each pair gets a namespace of its own, so `a`
is the only candidate. The lookups run with the verifier's score threshold lowered, and each
hit's score is kept, so one run gives the whole curve over that threshold; at the calibrated
threshold it is exactly what the cache serves. Precision and recall come with 95% Wilson
intervals, per split and language; the curves are drawn for the test split.

Run: python -m bench.semantic_eval [--splits dev test] [--verifier DIR] [--png PATH] [--no-write]
The verifier was trained on the train split and calibrated on dev; test is for reporting.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import reproduce_command, write_section
from cache.embedder import MicroBatchEmbedder, load_encoder
from cache.response_cache import ResponseCache
from cache.semantic.corpus import (
    LANGUAGES,
    LATER_TEST,
    Pair,
    Split,
    conversations,
    pairs,
    shared_dev,
    small_talk_split,
)
from cache.semantic.language import english_gate
from cache.semantic.rules import same_question
from cache.semantic.small_talk import SmallTalkModel, exchange_text
from cache.semantic.train_verifier import ensure_trained
from cache.semantic.verifier import ModelVerifier, default_cache_dir

DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "img" / "semantic_eval.png"


@dataclass(frozen=True)
class Outcome:
    """What the cache did with one pair: the verifier's score of the semantic hit, or None."""

    pair: Pair
    score: float | None


def _body(history: Sequence[dict[str, str]], question: str) -> dict[str, Any]:
    messages = [*history, {"role": "user", "content": question}]
    return {"model": "m", "messages": messages, "temperature": 0}


def _answer(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}


async def run(
    items: Sequence[Pair],
    verifier: ModelVerifier,
    small_talk: SmallTalkModel | None,
    backend: str,
) -> list[Outcome]:
    """Stores each `a`, looks up its `b`, one namespace per pair."""
    embedder = MicroBatchEmbedder(load_encoder(backend))
    lowered = ModelVerifier(verifier.classifier, verifier.calibration, min_score=-math.inf)
    cache = ResponseCache(
        None,
        embedder=embedder,
        verifier=lowered,
        language_gate=english_gate(),
        small_talk=small_talk,
    )
    out = []
    async with cache:
        for i, p in enumerate(items):
            namespace = f"pair-{i}"
            await cache.store(namespace, "chat", _body(p.history_a, p.a), _answer(p.id))
            hit = await cache.lookup(namespace, "chat", _body(p.history_b, p.b))
            score = None
            if hit is not None and hit.kind == "semantic":
                # The same question is served whatever the classifier says (rules.py).
                score = (
                    math.inf
                    if same_question(p.a, p.b)
                    else float(verifier.classifier.scores([(p.a, p.b)])[0])
                )
            out.append(Outcome(p, score))
    return out


def small_talk_table(model: SmallTalkModel, split: Split, backend: str) -> str:
    """How the small-talk model does on the split's labelled exchanges: of those it calls
    small talk (left out of the scope), how many are (precision), and how many of the
    small talk it finds (recall)."""
    rows = small_talk_split(split)
    if not rows:
        return ""
    encoder = load_encoder(backend)
    vectors = encoder.encode([exchange_text(r["user"], r["assistant"]) for r in rows])
    called = model.probabilities(vectors) >= model.threshold
    labels = [bool(r["small_talk"]) for r in rows]
    right = sum(c and y for c, y in zip(called, labels, strict=True))
    n_called, n_small = int(called.sum()), sum(labels)
    p_lo, p_hi = wilson(right, n_called)
    r_lo, r_hi = wilson(right, n_small)
    precision = right / n_called if n_called else float("nan")
    return (
        f"Small talk in histories (cache/semantic/small_talk.py, threshold {model.threshold:.3f}):"
        f" {len(rows)} labelled exchanges, {n_called} called small talk, {n_called - right} of"
        f" them wrongly; precision {precision:.3f} [{p_lo:.3f}, {p_hi:.3f}], recall"
        f" {right / max(1, n_small):.3f} [{r_lo:.3f}, {r_hi:.3f}]."
    )


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Score:
    hits: int
    right: int
    positives: int

    @property
    def precision(self) -> float | None:
        return self.right / self.hits if self.hits else None

    @property
    def recall(self) -> float:
        return self.right / self.positives if self.positives else 0.0


def score(outcomes: Sequence[Outcome], threshold: float) -> Score:
    served = [o for o in outcomes if o.score is not None and o.score >= threshold]
    return Score(
        hits=len(served),
        right=sum(o.pair.label for o in served),
        positives=sum(o.pair.label for o in outcomes),
    )


def _cell(value: float | None, k: int, n: int) -> str:
    if value is None:
        return "– (0 hits)"
    low, high = wilson(k, n)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def table(groups: dict[str, Sequence[Outcome]], threshold: float) -> str:
    rows = [
        "| set | pairs | same-answer pairs | semantic hits | wrong hits | precision [95% CI] "
        "| recall [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, outcomes in groups.items():
        s = score(outcomes, threshold)
        rows.append(
            f"| {name} | {len(outcomes)} | {s.positives} | {s.hits} | {s.hits - s.right} "
            f"| {_cell(s.precision, s.right, s.hits)} "
            f"| {_cell(s.recall, s.right, s.positives)} |"
        )
    return "\n".join(rows)


def plot(groups: dict[str, Sequence[Outcome]], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, outcomes in groups.items():
        thresholds = sorted({o.score for o in outcomes if o.score is not None})
        if not thresholds:
            ax.plot([], [], label=f"{name}: no semantic hits (exact caching only)")
            continue
        points = [score(outcomes, t) for t in thresholds]
        xs = [p.recall for p in points]
        ys = [p.precision or 0.0 for p in points]
        ax.plot(xs, ys, label=name)
        here = score(outcomes, threshold)
        ax.plot([here.recall], [here.precision or 0.0], "o", color=ax.lines[-1].get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0.5, 1.01)
    ax.set_xlim(0, 1)
    ax.axhline(0.99, color="grey", linestyle="--", linewidth=0.8)
    ax.set_title("Semantic hits over the verifier's threshold, test split (dot: calibrated)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _is_conversation(pair: Pair) -> bool:
    return pair.id.startswith("conv-")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--splits", nargs="+", default=["dev", "test"], choices=["train", "dev", "test"]
    )
    ap.add_argument("--embed-backend", default="auto")
    ap.add_argument("--verifier", type=Path, help="trained verifier folder (default: the cache's)")
    ap.add_argument("--png", type=Path, default=DEFAULT_PNG)
    ap.add_argument("--show-wrong", action="store_true", help="print each wrong hit")
    ap.add_argument("--no-write", action="store_true", help="don't update docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    folder = args.verifier or ensure_trained(default_cache_dir())
    verifier = ModelVerifier.load(folder)
    small_talk = SmallTalkModel.read(folder)
    threshold = verifier.min_score
    sections = []
    for split in args.splits:
        items = [*pairs(split), *conversations(split)]
        if split == "dev":
            items += shared_dev()
        outcomes = asyncio.run(run(items, verifier, small_talk, args.embed_backend))
        if args.show_wrong:
            for o in outcomes:
                if o.score is not None and o.score >= threshold and not o.pair.label:
                    print(f"wrong hit {o.score:.2f} {o.pair.kind}: {o.pair.a!r} / {o.pair.b!r}")
        singles = [o for o in outcomes if not _is_conversation(o.pair)]
        by_language: dict[str, Sequence[Outcome]] = {
            lang: [o for o in singles if o.pair.lang == lang and o.pair.domain != "shared"]
            for lang in LANGUAGES
        }
        groups: dict[str, Sequence[Outcome]] = dict(by_language)
        if split == "test":
            groups["en, the ten later test domains"] = [
                o for o in by_language["en"] if o.pair.domain in LATER_TEST
            ]
        if split == "dev":
            # The verifier trains on these: a check of fit, not of generalisation.
            groups["en, shared pairs (trained on)"] = [
                o for o in outcomes if o.pair.domain == "shared"
            ]
        convs = [o for o in outcomes if _is_conversation(o.pair)]
        for kind in sorted({o.pair.kind for o in convs}):
            groups[f"conversations: {kind}"] = [o for o in convs if o.pair.kind == kind]
        heading = (
            f"### {split} split (cosine at least {verifier.similarity_threshold}, "
            f"verifier score at least {threshold:.2f})"
        )
        text = heading + "\n\n" + table(groups, threshold)
        if small_talk is not None:
            text += "\n\n" + small_talk_table(small_talk, split, args.embed_backend)
        if split == "test":
            plot(by_language, threshold, args.png)
            print(f"curves: {args.png}")
        print(text + "\n")
        sections.append(text)
    print(f"reproduce: {reproduce_command()}")
    if not args.no_write:
        write_section(
            "semantic_eval",
            "\n\n".join(sections) + f"\n\n![curves](img/{args.png.name})",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
