"""Backend configuration: environment variables SLUICE_BACKEND_* and the same-named CLI flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["torch", "vllm"]
BatchingName = Literal["window", "continuous"]
DeviceName = Literal["auto", "cpu", "cuda"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


class BackendSettings(BaseSettings):
    """Every backend setting; built once at the entry point, then passed on as plain values."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_BACKEND_",
        cli_kebab_case=True,
        cli_prog_name="sluice backend",
        cli_implicit_flags=True,
        extra="ignore",
    )

    model: str = Field(
        default="demo",
        description="Built-in demo preset (`demo`, `bench`), Hugging Face model folder or hub id.",
    )
    served_model_name: str | None = Field(
        default=None,
        description="Model name in the API (`/v1/models`, the `model` field); default: --model.",
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8001, description="Port to listen on.")
    engine: Literal["torch", "vllm"] = Field(
        default="torch", description="Engine running the model."
    )
    batching: BatchingName = Field(
        default="window",
        description="`window`: closed time-windowed batches; `continuous`: join between steps.",
    )
    max_batch_size: int = Field(default=32, ge=1, description="Most requests in one batch.")
    max_wait_ms: float = Field(
        default=10, ge=0, description="How long a batch stays open after its first request."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Larger request bodies get 413 (the gateway's JSON may be 3x its client's).",
    )
    max_queue: int = Field(
        default=1024, ge=1, description="Most waiting requests; past it, answer 429."
    )
    timeout_s: float = Field(
        default=60, gt=0, description="Per-request deadline from arrival to the last token (504)."
    )
    device: DeviceName = Field(default="auto", description="Where the model runs.")
    dtype: DTypeName = Field(default="auto", description="Weight and activation dtype.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch engine: CPU threads for torch; default: torch's own choice.",
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context length; default: the model's own."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="vLLM: fraction of GPU memory it may use."
    )
    cpu_kvcache_space_gib: float | None = Field(
        default=None,
        gt=0,
        description="vLLM on CPU: KV cache GiB; default: VLLM_CPU_KVCACHE_SPACE, else 2.",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="vLLM: GPUs one model is split across."
    )
    drain_timeout_s: float = Field(
        default=30, ge=0, description="At shutdown, time for queued and running work to finish."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the backend and uvicorn."
    )
