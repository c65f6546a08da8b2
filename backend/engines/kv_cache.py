"""The engine's KV cache: appends in place, and batch surgery (drop rows, merge newcomers, trim).

transformers' DynamicLayer concatenates the whole cache with each step's keys and values,
copying every cached position of every row once per step. `GrowingLayer` keeps spare
positions behind the live ones and spare rows below them, and writes into the spares: a step
copies only what it adds, a finished row is replaced by moving one tail row into its place,
and newcomers are written into spare rows. The buffers are reallocated (with room to grow
again) only when the spares run out.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Spare positions (and rows) reserved on reallocation: at least this many, or half the live ones.
_MIN_SPARE_POSITIONS = 32
_MIN_SPARE_ROWS = 4


def _with_spare(needed: int, minimum: int) -> int:
    return needed + max(minimum, needed // 2)


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A full-attention cache layer whose keys and values are views into larger buffers.

    `keys` and `values` are what the model sees: rows [0, rows) and positions [start, end)
    of the buffers.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._key_buf: torch.Tensor | None = None
        self._value_buf: torch.Tensor | None = None
        self._rows = 0
        self._start = 0
        self._end = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._key_buf is None:
            self._allocate(key_states, key_states.shape[0], _with_spare(new, _MIN_SPARE_POSITIONS))
            self._rows = key_states.shape[0]
        elif self._end + new > self._key_buf.shape[2]:
            needed = self._end - self._start + new
            self._reallocate(self._key_buf.shape[0], _with_spare(needed, _MIN_SPARE_POSITIONS))
        key_buf, value_buf = self._buffers()
        key_buf[: self._rows, :, self._end : self._end + new] = key_states
        value_buf[: self._rows, :, self._end : self._end + new] = value_states
        self._end += new
        self._expose()
        return self._buffers_view()

    def move_rows(self, sources: list[int], targets: list[int], rows: int) -> None:
        """Copies rows `sources` over rows `targets`, then keeps the first `rows` rows."""
        key_buf, value_buf = self._buffers()
        if sources:
            src = torch.tensor(sources, device=key_buf.device)
            dst = torch.tensor(targets, device=key_buf.device)
            window = slice(self._start, self._end)
            key_buf[dst, :, window] = key_buf[src, :, window]
            value_buf[dst, :, window] = value_buf[src, :, window]
        self._rows = rows
        self._expose()

    def trim_left(self, columns: int) -> None:
        """Drops the first `columns` live positions (no copy: the window just moves)."""
        self._start = min(self._start + max(columns, 0), self._end)
        self._expose()

    def append_rows(self, other: GrowingLayer) -> None:
        """Puts `other`'s rows below this layer's, both right-aligned (zeros on the left)."""
        keys, values = other._buffers_view()
        added, width = keys.shape[0], keys.shape[2]
        key_buf, _ = self._buffers()
        length = max(self._end - self._start, width)
        if self._rows + added > key_buf.shape[0] or length > self._end - self._start:
            rows = _with_spare(self._rows + added, _MIN_SPARE_ROWS)
            self._reallocate(rows, _with_spare(length, _MIN_SPARE_POSITIONS), length)
        key_buf, value_buf = self._buffers()
        top, pad = self._rows, self._end - width
        for buf, new in ((key_buf, keys), (value_buf, values)):
            buf[top : top + added, :, self._start : pad] = 0
            buf[top : top + added, :, pad : self._end] = new
        self._rows += added
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
        self._rows = self._start = self._end = 0

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._key_buf is not None and self._value_buf is not None
        return self._key_buf, self._value_buf

    def _buffers_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def _allocate(self, like: torch.Tensor, rows: int, positions: int) -> None:
        shape = (rows, like.shape[1], positions, like.shape[3])
        self._key_buf = like.new_empty(shape)
        self._value_buf = like.new_empty(shape)
        self._start = self._end = 0

    def _reallocate(self, rows: int, positions: int, length: int | None = None) -> None:
        """New buffers of `rows` x `positions`; the live rows end at `length` (zeros before)."""
        keys, values = self._buffers_view()
        live = keys.shape[2]
        length = live if length is None else length
        self._allocate(keys, rows, positions)
        key_buf, value_buf = self._buffers()
        for buf, old in ((key_buf, keys), (value_buf, values)):
            buf[: self._rows, :, : length - live] = 0
            buf[: self._rows, :, length - live : length] = old
        self._start, self._end = 0, length

    def _expose(self) -> None:
        key_buf, value_buf = self._buffers()
        self.keys = key_buf[: self._rows, :, self._start : self._end]
        self.values = value_buf[: self._rows, :, self._start : self._end]

    def _adopt(self) -> None:
        """Takes keys and values set by a DynamicLayer method as the new (full) buffers."""
        if self.keys is None or self.values is None or self.keys.dim() != 4:
            self._key_buf = self._value_buf = None
            self._rows = self._start = self._end = 0
            return
        self._key_buf, self._value_buf = self.keys, self.values
        self._rows, self._start, self._end = self.keys.shape[0], 0, self.keys.shape[2]


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


def keep_rows(cache: Any, keep: list[int]) -> list[int]:
    """Keeps the rows at `keep` (ascending); returns the old index of each row now in place.

    Kept rows stay where they are; each leaving row's place is taken by a kept row from the
    tail, so only those rows are copied (the new order is not the old one).
    """
    count = len(keep)
    kept = set(keep)
    holes = [i for i in range(count) if i not in kept]
    movers = [i for i in keep if i >= count]
    order = list(range(count))
    for hole, mover in zip(holes, movers, strict=True):
        order[hole] = mover
    for layer in _growing_layers(cache):
        layer.move_rows(movers, holes, count)
    return order


def trim_left(cache: Any, columns: int) -> None:
    """Drops the first `columns` positions, which are padding in every remaining row."""
    if columns <= 0:
        return
    for layer in _growing_layers(cache):
        layer.trim_left(columns)


def merge(left: Any, right: Any) -> Any:
    """Puts `right`'s rows below `left`'s, both left-padded with zeros to the longer length."""
    for a, b in zip(_growing_layers(left), _growing_layers(right), strict=True):
        a.append_rows(b)
    return left
