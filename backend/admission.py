"""When continuous batching admits queued requests into a running batch.

Each admission costs an extra forward pass (the newcomers' prefill) that every running row
waits for, and most of a small pass is a fixed cost (streaming the weights, per-layer
overhead) that does not grow with the newcomers it carries. Admitting each arrival on its
own therefore slows a busy batch once per arrival; holding newcomers back for a few
decoding steps lets later arrivals share one pass, at the price of the newcomers' wait.

`hold_back` weighs the two, one decoding step at a time, from measured costs rather than
fixed ratios or step counts:

- holding on for one more step of length d costs the k waiting newcomers k * d, and saves
  the running rows one pass's fixed cost (live * pass_cost) for each arrival that joins,
  expected rate * d of them: hold while rate * live * pass_cost >= k;
- and, whatever the rate, never once the newcomers' summed wait has reached live *
  pass_cost, what admitting them at once would have cost the running rows (so nobody
  waits more than that: the ski-rental bound).

A lone request (nothing running), a queue that fills every free row, and light load
(few arrivals per pass) are admitted at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

# Arrivals this recent estimate the arrival rate.
RATE_HORIZON_S = 2.0


def hold_back(
    waits: Sequence[float], *, free: int, live: int, pass_cost_s: float, arrival_rate: float
) -> bool:
    """Whether to keep the admissible newcomers queued for one more decoding step.

    waits: how long each admissible newcomer (at most `free` of the queue, oldest first) has
    waited, in seconds. pass_cost_s: the fixed cost of one forward pass (0: unknown, admit).
    """
    k = len(waits)
    if k == 0 or live == 0 or k >= free or pass_cost_s <= 0:
        return False
    running_cost = live * pass_cost_s
    return arrival_rate * running_cost >= k and sum(waits) < running_cost


class ArrivalRate:
    """Requests per second over the last `horizon_s` seconds (a young server under-reports,
    which only ever admits sooner)."""

    def __init__(self, horizon_s: float = RATE_HORIZON_S) -> None:
        self._horizon_s = horizon_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> None:
        self._forget_before(now - self._horizon_s)
        self._times.append(now)

    def per_second(self, now: float) -> float:
        self._forget_before(now - self._horizon_s)
        return len(self._times) / self._horizon_s

    def _forget_before(self, moment: float) -> None:
        while self._times and self._times[0] <= moment:
            self._times.popleft()
