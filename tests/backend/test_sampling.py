"""Sampling edge cases a client can reach through the API's range checks."""

from __future__ import annotations

import pytest
import torch

from backend.engines.base import SamplingParams
from backend.engines.sampling import row_generator, sample


@pytest.mark.parametrize("top_p", [5e-324, 1e-320, 1e-46])
def test_a_top_p_below_float32s_range_keeps_the_most_likely_token(top_p: float) -> None:
    """Such a top_p rounds to 0 in float32, which once masked every token (a NaN
    distribution, and a 500 for the whole batch)."""
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.9]])
    params = SamplingParams(temperature=1.0, top_p=top_p, seed=7)
    generator = row_generator(params, torch.device("cpu"))
    assert sample(logits, [params], [generator]) == [1]
