"""Per-row token choice inside one batched step: greedy, temperature and top-p, seeded per row."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from backend.engines.base import SamplingParams

# Below this temperature, dividing the logits would overflow: such rows are greedy (as in vLLM).
GREEDY_BELOW = 1e-5


def is_greedy(params: SamplingParams) -> bool:
    """Whether the row always takes the most likely token."""
    return params.temperature < GREEDY_BELOW


def row_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A row's own random stream, so seeded output does not depend on its batch mates."""
    if is_greedy(params):
        return None
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return torch.Generator(device=device).manual_seed(seed)


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """Chooses one token per row from `logits` [rows, vocab] (float32)."""
    chosen = torch.argmax(logits, dim=-1).tolist()
    for i, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if not is_greedy(p):
            chosen[i] = _sample_row(logits[i], p, gen)
    return [int(t) for t in chosen]


def _sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    scaled = logits / p.temperature
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = (torch.cumsum(probs, dim=-1) - probs) >= p.top_p
        # A top_p below float32's range rounds to 0, which would mask the top token too.
        outside[0] = False
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)
        pick = torch.multinomial(probs, 1, generator=gen)
        return int(order[pick].item())
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen).item())
