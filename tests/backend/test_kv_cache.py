"""The in-place KV cache holds exactly what concatenating every step would, through all surgery."""

from __future__ import annotations

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


def test_dropping_rows_and_trimming_then_growing_again() -> None:
    layer, keys, values = filled(rows=4, prompt=6, steps=10)
    keep = torch.tensor([0, 2])
    layer.select_rows(keep)
    layer.trim_left(3)
    keys, values = keys[keep][:, :, 3:], values[keep][:, :, 3:]
    assert all(map(torch.equal, kv(layer), (keys, values)))
    for _ in range(70):
        k, v = states(2, 1), states(2, 1)
        layer.update(k, v)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
    assert all(map(torch.equal, kv(layer), (keys, values)))


def test_merge_right_aligns_both_batches_with_zero_padding() -> None:
    cache_a, cache_b = kv_cache.new_cache(_config()), kv_cache.new_cache(_config())
    a, keys_a, _ = filled(rows=2, prompt=7, steps=5)  # 12 positions
    b, keys_b, _ = filled(rows=1, prompt=4, steps=0)  # 4 positions
    cache_a.layers, cache_b.layers = [a], [b]
    kv_cache.merge(cache_a, cache_b, length=12)
    merged = kv(a)[0]
    assert merged.shape == (3, HEADS, 12, DIM)
    assert torch.equal(merged[:2], keys_a)
    assert torch.equal(merged[2:, :, 8:], keys_b)
    assert not merged[2:, :, :8].any()
    k = states(3, 1)
    out, _ = a.update(k, states(3, 1))
    assert torch.equal(out[:, :, :12], merged) and torch.equal(out[:, :, 12:], k)


def _config() -> object:
    from transformers import LlamaConfig

    return LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=HEADS)
