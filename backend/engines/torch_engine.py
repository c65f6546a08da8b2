"""The transformers engine: every live row advances by one token per shared forward pass."""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from backend.demo_model import PRESETS, ensure_demo_model
from backend.engines import kv_cache
from backend.engines.base import Admit, Emit, Row, RowOutput
from backend.engines.pass_cost import PassCost
from backend.engines.prompts import PromptEncoder
from backend.engines.row_state import RowState
from backend.engines.sampling import sample

Device = Literal["cpu", "cuda", "auto"]
DType = Literal["auto", "float32", "bfloat16", "float16"]

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class _Batch:
    """The live rows, their left-padded KV cache and attention mask, and each row's last token."""

    states: list[RowState]
    cache: Any  # transformers DynamicCache
    mask: torch.Tensor  # [rows, positions], 1 where a real token sits
    last: torch.Tensor  # [rows], the token each row feeds into the next step


class TorchEngine:
    """A Hugging Face causal LM served with batched, per-row-finishing decoding."""

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        model_name: str,
        max_model_len: int | None = None,
    ) -> None:
        """Wraps a loaded model and tokenizer.

        model: a transformers causal LM, already on its device and in eval mode.
        tokenizer: its Hugging Face tokenizer (a private copy is used for decoding).
        model_name: the name clients use for this model.
        max_model_len: context length; defaults to the model's max_position_embeddings.
        """
        self._model = model
        self._prompts = PromptEncoder(tokenizer)
        self._decoder = copy.deepcopy(tokenizer)  # fast tokenizers refuse concurrent borrows
        self._name = model_name
        self._device = next(model.parameters()).device
        self._max_len = max_model_len or _context_length(model.config, tokenizer)
        self._eos_ids = _eos_ids(model, tokenizer)
        # Ids at or past the embedding table's size would fail the whole forward pass.
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        # Computing logits for the last prompt position only saves a vocab-wide matmul per token.
        self._last_logits_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        # What an extra prefill pass costs the running rows: continuous admission weighs it.
        self._pass_cost = PassCost()
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else min(self._eos_ids, default=0))

    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: Device = "cpu",
        dtype: DType = "auto",
        cache_dir: Path | None = None,
        max_model_len: int | None = None,
        threads: int | None = None,
    ) -> TorchEngine:
        """Loads a model folder or hub id; "demo" and "bench" build the built-in model first.

        threads: torch's intra-op thread count for this process (None leaves torch's default).
        On a CPU shared with other busy processes, fewer threads than cores avoids OpenMP
        threads spinning while they wait for each other (or set OMP_WAIT_POLICY=PASSIVE).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(threads)

        path = str(ensure_demo_model(model, cache_dir)) if model in PRESETS else model  # type: ignore[arg-type]
        dev = torch.device(_pick_device(device))
        torch_dtype = _pick_dtype(dtype, dev)
        logger.info("loading model %s on %s (%s)", path, dev, torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        hf = hf.to(dev).eval()
        return cls(model=hf, tokenizer=tokenizer, model_name=model, max_model_len=max_model_len)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def max_model_len(self) -> int:
        return self._max_len

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._prompts.encode_prompt(prompt)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Applies the tokenizer's chat template, with the generation prompt appended."""
        return self._prompts.encode_chat(messages)

    def run_batch(self, rows: Sequence[Row], emit: Emit) -> None:
        """Generates every row to completion with one forward pass per step for all live rows."""
        if not rows:
            return
        pending = [list(rows)]

        def admit_once(free: int, idle: bool, pass_cost_s: float = 0.0) -> Sequence[Row]:
            return pending.pop() if pending else []

        self.run_continuous(admit_once, emit, max_rows=len(rows))

    def run_continuous(self, admit: Admit, emit: Emit, *, max_rows: int) -> None:
        """Decodes while admitting new rows between steps, until idle and `admit` returns none."""
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        batch: _Batch | None = None
        with torch.inference_mode():
            while True:
                batch = self._drop_cancelled(batch, emit)
                live = len(batch.states) if batch else 0
                if live < max_rows:
                    free = max_rows - live
                    newcomers = list(admit(free, live == 0, pass_cost_s=self._pass_cost.fixed_s))
                    if len(newcomers) > free:
                        raise ValueError(f"admit returned {len(newcomers)} rows for {free} slots")
                    if not newcomers and live == 0:
                        return
                    states = self._admit_states(newcomers, emit)
                    if states:
                        batch = self._merge(batch, self._prefill(states, emit))
                if batch is not None:
                    started, rows = time.perf_counter(), len(batch.states)
                    batch = self._decode_step(batch, emit)
                    self._pass_cost.observe(rows, time.perf_counter() - started)

    def check_row(self, row: Row) -> None:
        """Raises ValueError if the row cannot run (the HTTP layer is expected to check first)."""
        p = row.params
        n = len(row.prompt_token_ids)
        if n == 0:
            raise ValueError(f"request {row.request_id}: empty prompt")
        bad = next((t for t in row.prompt_token_ids if not 0 <= t < self._vocab_size), None)
        if bad is not None:
            raise ValueError(
                f"request {row.request_id}: token id {bad} is outside the vocabulary "
                f"of {self._vocab_size}"
            )
        if p.max_tokens < 1:
            raise ValueError(f"request {row.request_id}: max_tokens must be at least 1")
        if n + p.max_tokens > self._max_len:
            raise ValueError(
                f"request {row.request_id}: prompt ({n} tokens) plus max_tokens ({p.max_tokens}) "
                f"exceeds the model's context of {self._max_len} tokens"
            )
        if p.temperature < 0 or not 0 < p.top_p <= 1:
            raise ValueError(f"request {row.request_id}: temperature >= 0 and 0 < top_p <= 1")

    def _drop_cancelled(self, batch: _Batch | None, emit: Emit) -> _Batch | None:
        if batch is None:
            return None
        for state in batch.states:
            if state.row.cancelled():
                emit(state.cancel())
        return self._prune(batch)

    def _admit_states(self, rows: Sequence[Row], emit: Emit) -> list[RowState]:
        """The newcomers that can run; a row that cannot ends alone with an error output."""
        states = []
        for row in rows:
            try:
                self.check_row(row)
                state = RowState(
                    row, tokenizer=self._decoder, eos_ids=self._eos_ids, device=self._device
                )
            except Exception as exc:  # this row's own settings, e.g. a seed torch refuses
                emit(_failed(row, str(exc)))
                continue
            if row.cancelled():
                emit(state.cancel())
            else:
                states.append(state)
        return states

    def _prefill(self, states: list[RowState], emit: Emit) -> _Batch | None:
        """Runs the newcomers' prompts in one left-padded pass and samples their first tokens."""
        width = max(len(s.row.prompt_token_ids) for s in states)
        ids = torch.full((len(states), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(states), width), dtype=torch.long)
        for i, s in enumerate(states):
            prompt = s.row.prompt_token_ids
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._last_logits_only else {}
        out = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._new_cache(),
            use_cache=True,
            **extra,
        )
        batch = _Batch(states=states, cache=out.past_key_values, mask=mask, last=ids[:, -1])
        return self._advance(batch, out.logits[:, -1, :], emit)

    def _decode_step(self, batch: _Batch, emit: Emit) -> _Batch | None:
        """One forward pass that moves every live row forward by one token."""
        ones = batch.mask.new_ones((batch.mask.shape[0], 1))
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        positions = batch.mask.sum(dim=1, keepdim=True) - 1
        out = self._model(
            input_ids=batch.last[:, None],
            attention_mask=batch.mask,
            position_ids=positions,
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.cache = out.past_key_values
        return self._advance(batch, out.logits[:, -1, :], emit)

    def _advance(self, batch: _Batch, logits: torch.Tensor, emit: Emit) -> _Batch | None:
        """Samples each row's next token, emits what it produced, and frees finished rows."""
        logits = logits.float()
        eos = sorted(self._eos_ids)
        for i, state in enumerate(batch.states):
            if eos and state.suppress_eos:
                logits[i, eos] = float("-inf")
        tokens = sample(
            logits, [s.params for s in batch.states], [s.generator for s in batch.states]
        )
        for state, token in zip(batch.states, tokens, strict=True):
            output = state.push(token)
            if output is not None:
                emit(output)
        batch.last = torch.tensor(tokens, dtype=torch.long, device=self._device)
        return self._prune(batch)

    def _prune(self, batch: _Batch) -> _Batch | None:
        """Removes finished rows from the batch and the padding columns nobody needs any more."""
        keep = [i for i, s in enumerate(batch.states) if not s.finished]
        if not keep:
            return None
        if len(keep) < len(batch.states):
            order = kv_cache.keep_rows(batch.cache, keep)
            index = torch.tensor(order, dtype=torch.long, device=self._device)
            batch.states = [batch.states[i] for i in order]
            batch.mask = batch.mask[index]
            batch.last = batch.last[index]
            first = int(batch.mask.any(dim=0).int().argmax().item())
            if first > 0:
                kv_cache.trim_left(batch.cache, first)
                batch.mask = batch.mask[:, first:]
        return batch

    def _merge(self, running: _Batch | None, fresh: _Batch | None) -> _Batch | None:
        """Joins newly prefilled rows to the running batch, aligning both on the right."""
        if running is None or fresh is None:
            return running or fresh
        length = max(running.mask.shape[1], fresh.mask.shape[1])
        cache = kv_cache.merge(running.cache, fresh.cache)
        mask = torch.cat([_pad_mask(running.mask, length), _pad_mask(fresh.mask, length)], dim=0)
        return _Batch(
            states=running.states + fresh.states,
            cache=cache,
            mask=mask,
            last=torch.cat([running.last, fresh.last]),
        )

    def _new_cache(self) -> Any:
        return kv_cache.new_cache(self._model.config)


def _failed(row: Row, error: str) -> RowOutput:
    """The one output of a row that could not run."""
    return RowOutput(
        request_id=row.request_id,
        text="",
        token_ids=(),
        finish_reason="stop",
        prompt_tokens=len(row.prompt_token_ids),
        completion_tokens=0,
        error=error,
    )


def _pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


def _context_length(config: Any, tokenizer: Any) -> int:
    n = getattr(config, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 1_000_000 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return frozenset(ids)


def _pick_device(device: Device) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
