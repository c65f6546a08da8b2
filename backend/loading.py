"""Turns the model settings (demo preset, folder or hub id) into a loaded engine."""

from __future__ import annotations

import logging
import time

from backend.engines.base import Engine
from backend.settings import DeviceName, DTypeName, EngineName

log = logging.getLogger("sluice.backend")


def load_engine(
    *,
    model: str,
    engine: EngineName = "torch",
    device: DeviceName = "auto",
    dtype: DTypeName = "auto",
) -> Engine:
    """Loads the model with the chosen engine, logging what it loads and how long it took."""
    started = time.perf_counter()
    log.info(
        "loading model %r with the %s engine (device=%s, dtype=%s)", model, engine, device, dtype
    )
    loaded: Engine
    if engine == "torch":
        from backend.engines.torch_engine import TorchEngine

        loaded = TorchEngine.load(model, device=device, dtype=dtype)
    else:
        raise ValueError(f"engine {engine!r} is not available in this build")
    log.info(
        "model %r loaded in %.1f s (context %d tokens)",
        loaded.model_name,
        time.perf_counter() - started,
        loaded.max_model_len,
    )
    return loaded
