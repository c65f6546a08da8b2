"""The admission rule of continuous batching and the cost fit it relies on."""

from __future__ import annotations

import pytest

from backend.admission import ArrivalRate, hold_back
from backend.engines.pass_cost import PassCost


def held(waits: list[float], **kw: float) -> bool:
    args: dict[str, float] = {"free": 8, "live": 10, "pass_cost_s": 0.02, "arrival_rate": 10}
    args.update(kw)
    return hold_back(
        waits,
        free=int(args["free"]),
        live=int(args["live"]),
        pass_cost_s=args["pass_cost_s"],
        arrival_rate=args["arrival_rate"],
    )


def test_busy_batch_and_frequent_arrivals_hold_a_newcomer_back() -> None:
    # 10 rows x 20 ms = 200 ms per early pass; 10 arrivals/s bring 2 per pass.
    assert held([0.01])
    assert held([0.05, 0.01])


def test_the_summed_wait_never_passes_what_an_early_pass_costs() -> None:
    assert not held([0.15, 0.06])  # 210 ms waited >= 10 rows x 20 ms


@pytest.mark.parametrize(
    ("waits", "overrides"),
    [
        ([], {}),  # nothing to admit
        ([0.0], {"live": 0}),  # nothing running: start at once
        ([0.0] * 8, {}),  # the queue fills every free row
        ([0.0], {"pass_cost_s": 0}),  # the engine does not know its costs
        ([0.0], {"arrival_rate": 4}),  # 4/s x 200 ms: under one arrival per pass
        ([0.0, 0.0, 0.0], {"arrival_rate": 10}),  # 2 expected per pass, 3 already here
    ],
)
def test_newcomers_are_admitted_at_once(waits: list[float], overrides: dict[str, float]) -> None:
    assert not held(waits, **overrides)


def test_arrival_rate_counts_the_last_horizon_only() -> None:
    rate = ArrivalRate(horizon_s=2.0)
    assert rate.per_second(0.0) == 0
    for t in (0.0, 0.5, 1.0, 1.5):
        rate.record(t)
    assert rate.per_second(1.5) == 2.0
    assert rate.per_second(2.6) == 1.0  # 0.0 and 0.5 are older than 2 s


def test_pass_cost_fits_the_fixed_part_of_a_step() -> None:
    cost = PassCost()
    assert cost.fixed_s == 0
    for rows in [1, 4, 16, 32, 8, 2] * 20:
        cost.observe(rows, 0.010 + 0.0007 * rows)
    assert cost.fixed_s == pytest.approx(0.010, rel=1e-6)


def test_pass_cost_with_one_batch_size_charges_a_row_share() -> None:
    cost = PassCost()
    for _ in range(10):
        cost.observe(4, 0.020)
    assert cost.fixed_s == pytest.approx(0.005)
