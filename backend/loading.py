"""Turns the model settings (demo preset, folder or hub id) into a loaded engine."""

from __future__ import annotations

import logging
import time

from backend.engines.base import AnyEngine
from backend.settings import BackendSettings

log = logging.getLogger("sluice.backend")


def load_engine(settings: BackendSettings) -> AnyEngine:
    """Loads the model with the configured engine, logging what it loads and how long it took."""
    started = time.perf_counter()
    log.info(
        "loading model %r with the %s engine (device=%s, dtype=%s)",
        settings.model,
        settings.engine,
        settings.device,
        settings.dtype,
    )
    loaded: AnyEngine
    if settings.engine == "torch":
        import torch

        from backend.engines.torch_engine import TorchEngine

        if settings.threads is not None:
            # On a shared or small CPU, fewer threads than cores avoids OpenMP spin contention.
            torch.set_num_threads(settings.threads)

        loaded = TorchEngine.load(
            settings.model,
            device=settings.device,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
        )
    else:
        from backend.engines.vllm_engine import VllmEngine

        loaded = VllmEngine.load(
            settings.model,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            cpu_kvcache_space_gib=settings.cpu_kvcache_space_gib,
            tensor_parallel_size=settings.tensor_parallel_size,
            max_num_seqs=settings.max_batch_size,
        )
    log.info(
        "model %r loaded in %.1f s (context %d tokens)",
        loaded.model_name,
        time.perf_counter() - started,
        loaded.max_model_len,
    )
    return loaded


def close_engine(engine: AnyEngine) -> None:
    """Releases an engine that holds resources beyond memory (vLLM's engine process)."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
