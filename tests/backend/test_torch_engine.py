"""The torch engine on the demo model: batching never changes a row's output."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backend.demo_model import EOS_ID
from backend.engines.base import Row, RowOutput, SamplingParams
from backend.engines.torch_engine import TorchEngine

PROMPTS = (
    "Hello world",
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you",
    "Hi",
    "What is the capital of France? Paris is",
    "Numbers: 0 1 2 3",
)


def row(engine: TorchEngine, rid: str, prompt: str, **params: object) -> Row:
    return Row(
        request_id=rid,
        prompt_token_ids=engine.encode_prompt(prompt),
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


def run(engine: TorchEngine, rows: Sequence[Row]) -> dict[str, list[RowOutput]]:
    outputs: dict[str, list[RowOutput]] = defaultdict(list)
    engine.run_batch(rows, lambda o: outputs[o.request_id].append(o))
    return dict(outputs)


def text(outs: list[RowOutput]) -> str:
    return "".join(o.text for o in outs)


def tokens(outs: list[RowOutput]) -> tuple[int, ...]:
    return tuple(t for o in outs for t in o.token_ids)


def assert_one_final(outs: list[RowOutput]) -> None:
    assert [o.finish_reason is not None for o in outs] == [False] * (len(outs) - 1) + [True]


def test_greedy_output_is_the_same_alone_and_in_a_padded_batch(demo_engine: TorchEngine) -> None:
    limits = (20, 7, 33, 12, 25)
    rows = [
        row(demo_engine, str(i), p, max_tokens=n, temperature=0, ignore_eos=True)
        for i, (p, n) in enumerate(zip(PROMPTS, limits, strict=True))
    ]
    assert len({len(r.prompt_token_ids) for r in rows}) == len(rows), "lengths must differ"
    alone = {r.request_id: run(demo_engine, [r])[r.request_id] for r in rows}
    batched = run(demo_engine, rows)
    for r, n in zip(rows, limits, strict=True):
        a, b = alone[r.request_id], batched[r.request_id]
        assert tokens(a) == tokens(b)
        assert text(a) == text(b)
        assert len(tokens(b)) == n
        assert_one_final(b)
    assert len({tokens(batched[r.request_id])[:5] for r in rows}) > 1, "rows should differ"


def test_seeded_sampling_is_reproducible_alone_and_batched(demo_engine: TorchEngine) -> None:
    def sampled(rid: str, prompt: str, seed: int) -> Row:
        return row(
            demo_engine,
            rid,
            prompt,
            max_tokens=16,
            temperature=0.9,
            top_p=0.9,
            seed=seed,
            ignore_eos=True,
        )

    a = sampled("a", PROMPTS[0], 7)
    alone = run(demo_engine, [a])["a"]
    batch = run(
        demo_engine,
        [sampled("x", PROMPTS[1], 1), sampled("a", PROMPTS[0], 7), sampled("y", PROMPTS[2], 2)],
    )
    assert tokens(batch["a"]) == tokens(alone)
    assert text(batch["a"]) == text(alone)
    other_seed = run(demo_engine, [sampled("b", PROMPTS[0], 8)])["b"]
    assert tokens(other_seed) != tokens(alone)


def test_max_tokens_ends_rows_with_length_and_exact_counts(demo_engine: TorchEngine) -> None:
    rows = [
        row(demo_engine, str(n), PROMPTS[n % 5], max_tokens=n, temperature=0, ignore_eos=True)
        for n in (1, 2, 9)
    ]
    outputs = run(demo_engine, rows)
    for r in rows:
        outs = outputs[r.request_id]
        final = outs[-1]
        assert final.finish_reason == "length"
        assert final.completion_tokens == r.params.max_tokens == len(tokens(outs))
        assert final.prompt_tokens == len(r.prompt_token_ids)
        assert_one_final(outs)


def test_stop_string_spanning_tokens_cuts_the_text(
    demo_engine: TorchEngine, demo_tokenizer: Any
) -> None:
    prompt = PROMPTS[3]
    ref = run(demo_engine, [row(demo_engine, "r", prompt, max_tokens=24, temperature=0)])["r"]
    ids = tokens(ref)
    pieces = [demo_tokenizer.decode([t]) for t in ids]
    k = next(i for i in range(3, len(pieces) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]  # straddles the boundary between two tokens
    full = text(ref)
    expected = full[: full.index(stop)]
    # The row must stop at the first token whose text completes the stop string.
    needed = next(n for n in range(1, len(ids) + 1) if stop in "".join(pieces[:n]))

    outs = run(
        demo_engine,
        [row(demo_engine, "s", prompt, max_tokens=24, temperature=0, stop=("zzzz", stop))],
    )["s"]
    assert text(outs) == expected
    assert outs[-1].finish_reason == "stop"
    assert outs[-1].completion_tokens == needed
    assert all(stop not in o.text for o in outs)
    assert_one_final(outs)


def test_cancelled_row_stops_early_while_others_continue(demo_engine: TorchEngine) -> None:
    polls = itertools.count()
    doomed = row(demo_engine, "doomed", PROMPTS[0], max_tokens=30, temperature=0, ignore_eos=True)
    doomed.cancelled = lambda: next(polls) >= 4
    other = row(demo_engine, "other", PROMPTS[1], max_tokens=30, temperature=0, ignore_eos=True)
    outputs = run(demo_engine, [doomed, other])
    again = row(demo_engine, "doomed", PROMPTS[0], max_tokens=30, temperature=0, ignore_eos=True)
    alone = run(demo_engine, [again])["doomed"]

    cut = outputs["doomed"]
    assert cut[-1].finish_reason == "stop"
    assert 0 < cut[-1].completion_tokens < 30
    assert alone[-1].finish_reason == "length"
    assert tokens(alone)[: len(tokens(cut))] == tokens(cut)
    assert outputs["other"][-1].finish_reason == "length"
    assert outputs["other"][-1].completion_tokens == 30
    assert_one_final(cut)


def test_eos_ends_a_row_unless_ignored_or_too_early(
    eos_prone_engine: TorchEngine, demo_tokenizer: Any
) -> None:
    engine = eos_prone_engine

    def unstoppable(prompt: str) -> list[RowOutput]:
        r = row(engine, "f", prompt, max_tokens=12, temperature=0, ignore_eos=True)
        return run(engine, [r])["f"]

    # A prompt whose greedy continuation says something, then EOS, well before max_tokens.
    candidates = ("What is", "a", "The quick brown fox", "Hello world", "Hi", "b c", "Numbers")
    found = [(p, outs) for p in candidates if EOS_ID in tokens(outs := unstoppable(p))[1:6]]
    assert found, "the EOS-prone model should end some prompt early"
    prompt, unstopped = found[0]
    ids = tokens(unstopped)
    first_eos = ids.index(EOS_ID)
    assert unstopped[-1].finish_reason == "length"
    assert unstopped[-1].completion_tokens == 12

    plain = run(engine, [row(engine, "p", prompt, max_tokens=12, temperature=0)])["p"]
    assert plain[-1].finish_reason == "stop"
    assert tokens(plain) == ids[: first_eos + 1]
    assert text(plain) == demo_tokenizer.decode(list(ids[:first_eos]), skip_special_tokens=True)

    late = run(engine, [row(engine, "m", prompt, max_tokens=12, temperature=0, min_tokens=6)])
    late_ids = tokens(late["m"])
    assert EOS_ID not in late_ids[:6]
    assert len(late_ids) > first_eos + 1
    final = late["m"][-1]
    assert (final.finish_reason, late_ids[-1] == EOS_ID) in {("stop", True), ("length", False)}


def test_rows_that_cannot_run_fail_alone_and_their_batch_mates_go_on(
    demo_engine: TorchEngine,
) -> None:
    good = row(demo_engine, "good", PROMPTS[1], max_tokens=8, temperature=0, ignore_eos=True)
    too_long = row(demo_engine, "long", PROMPTS[0], max_tokens=demo_engine.max_model_len)
    unknown_id = Row(
        request_id="vocab",
        prompt_token_ids=[5, demo_engine.vocab_size],
        params=SamplingParams(max_tokens=4),
    )
    bad_seed = row(demo_engine, "seed", PROMPTS[2], max_tokens=4, seed=2**64)
    outputs = run(demo_engine, [too_long, unknown_id, good, bad_seed])
    alone = run(demo_engine, [good])["good"]
    for rid, cause in [("long", "context"), ("vocab", "vocabulary"), ("seed", "")]:
        (only,) = outputs[rid]
        assert only.error is not None and cause in only.error
        assert only.finish_reason is not None and only.completion_tokens == 0
    assert_one_final(outputs["good"])
    assert outputs["good"][-1].error is None
    assert tokens(outputs["good"]) == tokens(alone) and len(tokens(alone)) == 8


def test_a_row_refused_mid_run_leaves_the_running_rows_alone(demo_engine: TorchEngine) -> None:
    first = row(demo_engine, "a", PROMPTS[0], max_tokens=6, temperature=0, ignore_eos=True)
    bad = Row(request_id="bad", prompt_token_ids=[-3], params=SamplingParams(max_tokens=2))
    arrivals = [[first], [bad]]
    outputs: dict[str, list[RowOutput]] = defaultdict(list)

    def admit(free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
        return arrivals.pop(0) if arrivals else []

    demo_engine.run_continuous(admit, lambda o: outputs[o.request_id].append(o), max_rows=2)
    (refused,) = outputs["bad"]
    assert refused.error is not None and "-3" in refused.error
    assert tokens(outputs["a"]) == tokens(run(demo_engine, [first])["a"])


def test_multibyte_text_arrives_whole(demo_engine: TorchEngine, demo_tokenizer: Any) -> None:
    from backend.engines.detokenize import IncrementalDetokenizer

    sample = "Ünïcödé 漢字 🙂!"
    ids = demo_engine.encode_prompt(sample)
    assert len(ids) > len(sample) - 6, "multi-byte characters should span several tokens"
    detok = IncrementalDetokenizer(demo_tokenizer, ids[:1])
    deltas = [detok.push(t) for t in ids[1:]] + [detok.flush()]
    assert "".join(deltas) == sample
    assert all("\ufffd" not in d for d in deltas)


def test_chat_template_ends_with_the_generation_prompt(
    demo_engine: TorchEngine, demo_tokenizer: Any
) -> None:
    ids = demo_engine.encode_chat([{"role": "user", "content": "Hi there"}])
    rendered = demo_tokenizer.decode(ids)
    assert rendered.startswith("<|bos|><|user|>\nHi there<|eos|>")
    assert rendered.endswith("<|assistant|>\n")


class ScriptedAdmit:
    """Hands out rows on chosen admit calls and records what the engine asked for."""

    def __init__(self, script: dict[int, list[Row]]) -> None:
        self.script = script
        self.waiting: list[Row] = []
        self.calls: list[tuple[int, bool]] = []
        self.pass_costs: list[float] = []

    def __call__(self, free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
        self.waiting += self.script.pop(len(self.calls), [])
        self.calls.append((free, idle))
        self.pass_costs.append(pass_cost_s)
        if idle and not self.waiting and self.script:
            return self(free, idle, pass_cost_s)  # nothing runs: on to the next arrival
        given, self.waiting = self.waiting[:free], self.waiting[free:]
        return given


def test_continuous_batching_matches_running_alone(demo_engine: TorchEngine) -> None:
    def greedy(rid: str, prompt: str, n: int) -> Row:
        return row(demo_engine, rid, prompt, max_tokens=n, temperature=0, ignore_eos=True)

    specs = [("a", 0, 20), ("b", 1, 6), ("c", 2, 15), ("d", 3, 9), ("e", 4, 12), ("f", 0, 3)]
    alone = {rid: run(demo_engine, [greedy(rid, PROMPTS[p], n)])[rid] for rid, p, n in specs}
    rows = {rid: greedy(rid, PROMPTS[p], n) for rid, p, n in specs}
    admit = ScriptedAdmit(
        {0: [rows["a"], rows["b"]], 2: [rows["c"]], 5: [rows["d"], rows["e"], rows["f"]]}
    )
    outputs: dict[str, list[RowOutput]] = defaultdict(list)
    live: set[str] = set()
    peak = 0

    def emit(o: RowOutput) -> None:
        nonlocal peak
        live.add(o.request_id)
        peak = max(peak, len(live))
        if o.finish_reason is not None:
            live.discard(o.request_id)
        outputs[o.request_id].append(o)

    demo_engine.run_continuous(admit, emit, max_rows=3)

    for rid, _, n in specs:
        assert tokens(outputs[rid]) == tokens(alone[rid])
        assert text(outputs[rid]) == text(alone[rid])
        assert outputs[rid][-1].completion_tokens == n
        assert_one_final(outputs[rid])
    assert peak <= 3
    assert all(0 < free <= 3 for free, _ in admit.calls)
    assert admit.calls[-1] == (3, True), "the run ends when idle and nothing is admitted"
    # The engine tells admit the fitted fixed cost of a pass (it kept learning from earlier runs).
    assert all(0 < cost < 1 for cost in admit.pass_costs[1:])


def test_a_row_admitted_mid_run_starts_before_the_running_rows_finish(
    demo_engine: TorchEngine,
) -> None:
    long_rows = [
        row(demo_engine, f"long{i}", PROMPTS[i], max_tokens=30, temperature=0, ignore_eos=True)
        for i in range(2)
    ]
    late = row(demo_engine, "late", PROMPTS[3], max_tokens=4, temperature=0, ignore_eos=True)
    admit = ScriptedAdmit({0: long_rows, 4: [late]})
    events: list[tuple[str, str | None]] = []
    demo_engine.run_continuous(
        admit, lambda o: events.append((o.request_id, o.finish_reason)), max_rows=8
    )

    first_late = events.index(("late", None))
    late_done = events.index(("late", "length"))
    long_done = min(events.index((r.request_id, "length")) for r in long_rows)
    assert any(rid.startswith("long") for rid, _ in events[:first_late])
    assert first_late < late_done < long_done
    assert admit.calls[4] == (6, False), "newcomers are asked for between decoding steps"


def test_admit_may_not_hand_out_more_rows_than_are_free(demo_engine: TorchEngine) -> None:
    rows = [row(demo_engine, str(i), PROMPTS[i], max_tokens=3, temperature=0) for i in range(3)]
    with pytest.raises(ValueError, match="slots"):
        demo_engine.run_continuous(lambda free, idle, **_: rows, lambda o: None, max_rows=2)


def test_finished_rows_leave_the_batch_and_its_padding(
    demo_model_dir: Path, demo_tokenizer: Any
) -> None:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    engine = TorchEngine(model=model, tokenizer=demo_tokenizer, model_name="demo")
    shapes: list[tuple[int, int]] = []

    def record(module: object, args: object, kwargs: dict[str, Any]) -> None:
        shapes.append((kwargs["input_ids"].shape[0], kwargs["attention_mask"].shape[1]))

    model.register_forward_pre_hook(record, with_kwargs=True)
    long_prompt = row(engine, "long", PROMPTS[1], max_tokens=2, temperature=0, ignore_eos=True)
    short = row(engine, "short", PROMPTS[2], max_tokens=6, temperature=0, ignore_eos=True)
    run(engine, [long_prompt, short])

    n_long, n_short = len(long_prompt.prompt_token_ids), len(short.prompt_token_ids)
    assert shapes[:2] == [(2, n_long), (2, n_long + 1)]
    # Once the long row is done, the short row runs alone on its own positions only.
    assert shapes[2:] == [(1, n_short + k) for k in range(2, 6)]


def test_a_tiny_top_p_or_temperature_keeps_only_the_greedy_choice(demo_engine: TorchEngine) -> None:
    greedy = row(demo_engine, "g", PROMPTS[0], max_tokens=12, temperature=0, ignore_eos=True)
    narrow = row(
        demo_engine, "n", PROMPTS[0], max_tokens=12, temperature=1.5, top_p=1e-6, ignore_eos=True
    )
    cold = row(demo_engine, "c", PROMPTS[0], max_tokens=12, temperature=1e-7, ignore_eos=True)
    outputs = run(demo_engine, [greedy, narrow, cold])
    assert tokens(outputs["n"]) == tokens(outputs["g"])
    assert tokens(outputs["c"]) == tokens(outputs["g"])


def test_continuous_mode_frees_a_cancelled_row_for_a_waiting_one(
    demo_engine: TorchEngine,
) -> None:
    gone = threading.Event()
    leaver = row(demo_engine, "leaver", PROMPTS[0], max_tokens=40, temperature=0, ignore_eos=True)
    leaver.cancelled = gone.is_set
    stayer = row(demo_engine, "stayer", PROMPTS[1], max_tokens=12, temperature=0, ignore_eos=True)
    waiter = row(demo_engine, "waiter", PROMPTS[2], max_tokens=3, temperature=0, ignore_eos=True)
    admit = ScriptedAdmit({0: [leaver, stayer], 1: [waiter]})
    events: list[RowOutput] = []

    def emit(o: RowOutput) -> None:
        events.append(o)
        if o.request_id == "leaver" and o.completion_tokens >= 3:
            gone.set()

    demo_engine.run_continuous(admit, emit, max_rows=2)

    finals = {o.request_id: o for o in events if o.finish_reason is not None}
    assert finals["leaver"].finish_reason == "stop"
    assert finals["leaver"].completion_tokens < 40
    assert finals["stayer"].completion_tokens == 12
    assert finals["waiter"].completion_tokens == 3
    order = [o.request_id for o in events if o.finish_reason is not None]
    assert order.index("leaver") < order.index("waiter") < order.index("stayer")
