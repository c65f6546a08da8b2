"""Turns prompts and chat messages into token ids, the same way for every engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any


class PromptEncoder:
    """A Hugging Face tokenizer behind a lock: fast tokenizers refuse concurrent borrows,
    and request handlers encode from several threads at once."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def encode_prompt(self, prompt: str) -> list[int]:
        with self._lock:
            return list(self._tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Applies the tokenizer's chat template, with the generation prompt appended."""
        with self._lock:
            text = self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
