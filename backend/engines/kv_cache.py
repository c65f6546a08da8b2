"""The engine's KV cache: appends in place, and batch surgery (drop rows, merge newcomers, trim).

transformers' DynamicLayer concatenates the whole cache with each step's keys and values,
copying every cached position of every row once per step. `GrowingLayer` keeps spare
positions behind the live ones and writes each step's states into them, so a step copies
only what it adds; the cache is reallocated (with room to grow again) only when the spare
positions run out, when rows leave or when newcomers are merged in.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Spare positions reserved past the live ones: at least this many, or as many as are live.
_MIN_SPARE = 32


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A full-attention cache layer whose keys and values are views into larger buffers.

    `keys` and `values` are what the model sees: positions [start, end) of the buffers.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._key_buf: torch.Tensor | None = None
        self._value_buf: torch.Tensor | None = None
        self._start = 0
        self._end = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._key_buf is None:
            shape = (*key_states.shape[:2], new + max(_MIN_SPARE, new), key_states.shape[3])
            self._key_buf = key_states.new_empty(shape)
            self._value_buf = value_states.new_empty(shape)
            self._start = self._end = 0
        elif self._end + new > self._key_buf.shape[-2]:
            self._reallocate(self._end - self._start + new)
        assert self._value_buf is not None
        self._key_buf[:, :, self._end : self._end + new] = key_states
        self._value_buf[:, :, self._end : self._end + new] = value_states
        self._end += new
        self._expose()
        return self.keys, self.values  # type: ignore[return-value]

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keeps only the batch rows at `keep` (a copy of those rows, spare positions kept)."""
        if self._key_buf is None or self._value_buf is None:
            return
        self._key_buf = self._key_buf[:, :, self._start :].index_select(0, keep)
        self._value_buf = self._value_buf[:, :, self._start :].index_select(0, keep)
        self._start, self._end = 0, self._end - self._start
        self._expose()

    def trim_left(self, columns: int) -> None:
        """Drops the first `columns` live positions (no copy: the window just moves)."""
        self._start = min(self._start + max(columns, 0), self._end)
        self._expose()

    def stack(self, other: GrowingLayer, length: int) -> None:
        """Puts `other`'s rows under this layer's, both right-aligned on `length` positions."""
        mine, theirs = self._live(), other._live()
        rows = mine[0].shape[0] + theirs[0].shape[0]
        heads, dim = mine[0].shape[1], mine[0].shape[3]
        capacity = length + max(_MIN_SPARE, length)
        shape = (rows, heads, capacity, dim)
        keys = mine[0].new_empty(shape)
        values = mine[1].new_empty(shape)
        for (k, v), at in ((mine, 0), (theirs, mine[0].shape[0])):
            n, pad = k.shape[0], length - k.shape[2]
            keys[at : at + n, :, :pad] = 0
            values[at : at + n, :, :pad] = 0
            keys[at : at + n, :, pad:length] = k
            values[at : at + n, :, pad:length] = v
        self._key_buf, self._value_buf, self._start, self._end = keys, values, 0, length
        self._expose()

    # Other DynamicLayer operations replace keys and values wholesale: adopt what they leave.
    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._adopt()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._adopt()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._adopt()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._adopt()

    def reset(self) -> None:
        super().reset()
        self._key_buf = self._value_buf = None
        self._start = self._end = 0

    def _live(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def _reallocate(self, needed: int) -> None:
        """Moves the live positions to the front of new buffers with room for `needed` and more."""
        keys, values = self._live()
        live = keys.shape[-2]
        capacity = needed + max(_MIN_SPARE, needed)
        shape = (keys.shape[0], keys.shape[1], capacity, keys.shape[3])
        self._key_buf = keys.new_empty(shape)
        self._value_buf = values.new_empty(shape)
        self._key_buf[:, :, :live] = keys
        self._value_buf[:, :, :live] = values
        self._start, self._end = 0, live

    def _expose(self) -> None:
        assert self._key_buf is not None and self._value_buf is not None
        self.keys = self._key_buf[:, :, self._start : self._end]
        self.values = self._value_buf[:, :, self._start : self._end]

    def _adopt(self) -> None:
        """Takes keys and values set by a DynamicLayer method as the new (full) buffers."""
        if self.keys is None or self.values is None or self.keys.dim() != 4:
            self._key_buf = self._value_buf = None
            self._start = self._end = 0
            return
        self._key_buf, self._value_buf = self.keys, self.values
        self._start, self._end = 0, self.keys.shape[-2]


def new_cache(config: Any) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers append in place."""
    cache = DynamicCache(config=config)
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


def _growing_layers(cache: Any) -> list[GrowingLayer]:
    layers: list[Any] = list(cache.layers)
    for layer in layers:
        if not isinstance(layer, GrowingLayer):
            raise NotImplementedError(
                f"batch surgery supports full-attention caches only, not {type(layer).__name__}"
            )
    return layers


def select_rows(cache: Any, keep: torch.Tensor) -> None:
    """Keeps only the batch rows at `keep` (the others are freed)."""
    for layer in _growing_layers(cache):
        layer.select_rows(keep)


def trim_left(cache: Any, columns: int) -> None:
    """Drops the first `columns` positions, which are padding in every remaining row."""
    if columns <= 0:
        return
    for layer in _growing_layers(cache):
        layer.trim_left(columns)


def merge(left: Any, right: Any, *, length: int) -> Any:
    """Stacks `right`'s rows under `left`'s, both left-padded with zeros to `length` positions."""
    for a, b in zip(_growing_layers(left), _growing_layers(right), strict=True):
        a.stack(b, length)
    return left
