"""OpenAI wire format: request models that validate, and builders for responses and chunks."""

from __future__ import annotations

import json
import time
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backend.batcher import Completion
from backend.engines.base import FinishReason, SamplingParams
from backend.errors import InvalidRequest
from backend.json_body import InvalidJson, parse_json_object

# Fields that would change the output but that this backend does not implement: each is
# accepted only at its neutral value, and rejected with a 400 naming it otherwise.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
    "top_k": (None, -1, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "guided_json": (None,),
    "guided_regex": (None,),
    "guided_choice": (None,),
}


class StreamOptions(BaseModel):
    """`stream_options`: only include_usage changes what is sent."""

    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class _Request(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # OpenAI's seed is a 64-bit integer; torch's generators refuse anything wider.
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    user: str | None = None
    # Unsupported unless neutral (see _NEUTRAL); typed loosely so any value reaches the check.
    n: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    repetition_penalty: Any = None
    top_k: Any = None
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None

    @model_validator(mode="after")
    def _reject_unsupported(self) -> _Request:
        for name, neutral in _NEUTRAL.items():
            if name in type(self).model_fields and getattr(self, name) not in neutral:
                what = "n > 1" if name == "n" else f"`{name}`"
                raise InvalidRequest(
                    f"{what} is not supported by this backend; omit it or use its default.",
                    param=name,
                    code="unsupported_parameter",
                )
        if isinstance(self.stop, list) and any(not s for s in self.stop):
            raise InvalidRequest("Stop strings must not be empty.", param="stop")
        return self

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None or self.stop == "":
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        if self.min_tokens > max_tokens:
            raise InvalidRequest("min_tokens must not exceed max_tokens.", param="min_tokens")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop_strings(),
            ignore_eos=self.ignore_eos,
            min_tokens=self.min_tokens,
        )


class CompletionRequest(_Request):
    """POST /v1/completions."""

    prompt: str | list[int] | list[str] | list[list[int]]
    best_of: Any = None
    echo: Any = None
    suffix: Any = None

    def single_prompt(self) -> str | list[int]:
        """The one prompt of the request; lists of several prompts are refused."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        if prompt and isinstance(prompt[0], str | list):
            if len(prompt) != 1:
                raise InvalidRequest(
                    "Only one prompt per request is supported; send several requests.",
                    param="prompt",
                )
            only = prompt[0]
            return only if isinstance(only, str) else list(only)
        return [t for t in prompt if isinstance(t, int)]


class TextPart(BaseModel):
    """A text content part; other part types (images, audio) are refused."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None

    def requested_max_tokens(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


R = TypeVar("R", bound=_Request)


def parse_request(body: bytes, model: type[R]) -> R:
    """Parses a JSON body into a request model, mapping every failure to a clear 400."""
    try:
        data = parse_json_object(body)
    except InvalidJson as exc:
        raise InvalidRequest(exc.message, code=exc.code) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # In a union, the deepest error names the part the client most likely meant.
        first = max(exc.errors(), key=lambda e: len(e["loc"]))
        param = _param(first["loc"])
        if first["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {first['msg']}."
        raise InvalidRequest(message, param=param) from exc


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[int | str, ...]) -> str | None:
    """A dotted field path from pydantic's location, without union member tags."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]
    return ".".join(parts) or None


# -- responses ---------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def now() -> int:
    return int(time.time())


def completion_response(rid: str, model: str, created: int, done: Completion) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "text": done.text, "logprobs": None, "finish_reason": done.finish_reason}
        ],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }


def completion_chunk(
    rid: str,
    model: str,
    created: int,
    text: str,
    finish_reason: FinishReason | None,
    *,
    with_usage_field: bool,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def chat_response(rid: str, model: str, created: int, done: Completion) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.text, "refusal": None},
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    delta: dict[str, str],
    finish_reason: FinishReason | None,
    *,
    with_usage_field: bool,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(
    rid: str, model: str, created: int, obj: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, only usage."""
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def models_list(model: str, created: int, max_model_len: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "sluice",
                "max_model_len": max_model_len,
            }
        ],
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line pair."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()
