"""The in-place KV cache holds exactly what concatenating every step would, through all surgery."""

from __future__ import annotations

from typing import Any

import torch

from backend.engines import kv_cache
from backend.engines.kv_cache import GrowingLayer

HEADS, DIM = 2, 4


def states(rows: int, positions: int) -> torch.Tensor:
    return torch.randn(rows, HEADS, positions, DIM)


def kv(layer: GrowingLayer) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def filled(rows: int, prompt: int, steps: int) -> tuple[GrowingLayer, torch.Tensor, torch.Tensor]:
    """A layer after a prefill and `steps` one-position updates, with the expected keys/values."""
    layer = GrowingLayer()
    keys, values = states(rows, prompt), states(rows, prompt)
    layer.update(keys, values)
    for _ in range(steps):
        k, v = states(rows, 1), states(rows, 1)
        out_k, out_v = layer.update(k, v)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        assert torch.equal(out_k, keys) and torch.equal(out_v, values)
    return layer, keys, values


def test_steps_past_the_spare_room_keep_every_position() -> None:
    layer, keys, values = filled(rows=3, prompt=5, steps=120)
    assert layer.get_seq_length() == 125
    assert all(map(torch.equal, kv(layer), (keys, values)))


def test_steps_append_into_the_same_buffer_until_it_is_full() -> None:
    layer, _, _ = filled(rows=1, prompt=8, steps=1)
    base = kv(layer)[0].untyped_storage().data_ptr()
    layer.update(states(1, 1), states(1, 1))
    assert kv(layer)[0].untyped_storage().data_ptr() == base


def cache_of(layer: GrowingLayer) -> Any:
    cache = kv_cache.new_cache(_config())
    cache.layers = [layer]
    return cache


def test_leaving_rows_are_replaced_from_the_tail_then_the_cache_grows_again() -> None:
    layer, keys, values = filled(rows=5, prompt=6, steps=10)
    order = kv_cache.keep_rows(cache_of(layer), [0, 2, 4])
    assert order == [0, 4, 2], "row 1 left: the last kept row moves into its place"
    layer.trim_left(3)
    keys, values = keys[order][:, :, 3:], values[order][:, :, 3:]
    assert all(map(torch.equal, kv(layer), (keys, values)))
    for _ in range(70):
        k, v = states(3, 1), states(3, 1)
        layer.update(k, v)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
    assert all(map(torch.equal, kv(layer), (keys, values)))


def test_merge_right_aligns_both_batches_with_zero_padding() -> None:
    a, keys_a, _ = filled(rows=2, prompt=7, steps=5)  # 12 positions
    b, keys_b, _ = filled(rows=1, prompt=4, steps=0)  # 4 positions
    kv_cache.merge(cache_of(a), cache_of(b))
    merged = kv(a)[0]
    assert merged.shape == (3, HEADS, 12, DIM)
    assert torch.equal(merged[:2], keys_a)
    assert torch.equal(merged[2:, :, 8:], keys_b)
    assert not merged[2:, :, :8].any()
    k = states(3, 1)
    out, _ = a.update(k, states(3, 1))
    assert torch.equal(out[:, :, :12], merged) and torch.equal(out[:, :, 12:], k)


def test_later_newcomers_go_into_spare_rows_and_a_longer_one_realigns_all() -> None:
    a, keys_a, _ = filled(rows=2, prompt=6, steps=4)  # 10 positions
    cache = cache_of(a)
    kv_cache.merge(cache, cache_of(filled(rows=1, prompt=3, steps=0)[0]))  # makes spare rows
    base = kv(a)[0].untyped_storage().data_ptr()
    short, keys_short, _ = filled(rows=1, prompt=5, steps=0)
    kv_cache.merge(cache, cache_of(short))
    assert kv(a)[0].untyped_storage().data_ptr() == base, "written into a spare row"
    assert torch.equal(kv(a)[0][3, :, 5:], keys_short[0]) and not kv(a)[0][3, :, :5].any()

    long, keys_long, _ = filled(rows=1, prompt=14, steps=0)
    kv_cache.merge(cache, cache_of(long))
    merged = kv(a)[0]
    assert merged.shape == (5, HEADS, 14, DIM)
    assert torch.equal(merged[:2, :, 4:], keys_a) and not merged[:4, :, :4].any()
    assert torch.equal(merged[3, :, 9:], keys_short[0]) and torch.equal(merged[4], keys_long[0])


def _config() -> object:
    from transformers import LlamaConfig

    return LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=HEADS)
