"""The fixed cost of one forward pass, fitted from the engine's own decoding steps.

A decoding step over r rows takes about `fixed + r * per_row` seconds: `fixed` is what any
pass pays however few rows it carries (streaming the weights, per-layer overhead), and it is
what an extra prefill pass for newcomers costs every running row. The fit is least squares
over recent steps, with older steps weighing less, so it follows the machine's load.
"""

from __future__ import annotations

# Each new step's weight against the history's (an effective memory of about 100 steps).
_DECAY = 0.99


class PassCost:
    """Decayed least-squares fit of step duration against live rows."""

    def __init__(self) -> None:
        self._n = self._x = self._y = self._xx = self._xy = 0.0
        self._fixed = 0.0

    @property
    def fixed_s(self) -> float:
        """The fitted fixed cost of a pass, in seconds (0 until there is anything to fit)."""
        return self._fixed

    def observe(self, rows: int, seconds: float) -> None:
        d = _DECAY
        self._n = self._n * d + 1
        self._x = self._x * d + rows
        self._y = self._y * d + seconds
        self._xx = self._xx * d + rows * rows
        self._xy = self._xy * d + rows * seconds
        mean_x, mean_y = self._x / self._n, self._y / self._n
        var_x = self._xx / self._n - mean_x * mean_x
        if var_x < 0.25:
            # Steps have all carried about the same number of rows, so the slope cannot be
            # told from the fixed part: the step's share per row stands in (the whole step at
            # one row, where the fixed part dominates; an underestimate with many rows).
            self._fixed = mean_y / max(mean_x, 1.0)
            return
        slope = (self._xy / self._n - mean_x * mean_y) / var_x
        self._fixed = min(max(mean_y - max(slope, 0.0) * mean_x, 0.0), mean_y)
