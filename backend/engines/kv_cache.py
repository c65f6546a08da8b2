"""Batch surgery on a Hugging Face DynamicCache: drop finished rows, merge newcomers, trim pads."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


def _plain_layers(cache: Any) -> list[Any]:
    layers: list[Any] = list(cache.layers)
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(
                f"batch surgery supports full-attention caches only, not {type(layer).__name__}"
            )
    return layers


def select_rows(cache: Any, keep: torch.Tensor) -> None:
    """Keeps only the batch rows at `keep` (the others are freed)."""
    for layer in cache.layers:
        layer.batch_select_indices(keep)


def trim_left(cache: Any, columns: int) -> None:
    """Drops the first `columns` positions, which are padding in every remaining row."""
    if columns <= 0:
        return
    for layer in _plain_layers(cache):
        layer.keys = layer.keys[:, :, columns:, :]
        layer.values = layer.values[:, :, columns:, :]


def merge(left: Any, right: Any, *, length: int) -> Any:
    """Stacks `right`'s rows under `left`'s, both left-padded with zeros to `length` positions."""
    for a, b in zip(_plain_layers(left), _plain_layers(right), strict=True):
        a.keys = torch.cat([_pad_left(a.keys, length), _pad_left(b.keys, length)], dim=0)
        a.values = torch.cat([_pad_left(a.values, length), _pad_left(b.values, length)], dim=0)
    return left


def _pad_left(states: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - states.shape[2]
    if missing <= 0:
        return states
    shape = (states.shape[0], states.shape[1], missing, states.shape[3])
    return torch.cat([states.new_zeros(shape), states], dim=2)
