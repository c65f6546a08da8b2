"""Server-sent events both ways: replay a stored answer as a stream, assemble a stream to store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Literal

Endpoint = Literal["chat", "completion"]

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One SSE `data:` event carrying a JSON object."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[bytes, str | None]]:
    """Splits a byte stream into SSE events: (the raw event bytes, its joined data or None)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            raw, buffer = buffer[: end + 2], buffer[end + 2 :]
            data = [
                line[5:].removeprefix(b" ")
                for line in raw.split(b"\n")
                if line.startswith(b"data:")
            ]
            yield raw, (b"\n".join(data).decode() if data else None)
    if buffer.strip():
        # A stream cut without its final blank line: pass the bytes on, but they end nothing.
        yield buffer, None


def _chunk_base(response: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    base = {
        "id": response.get("id"),
        "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
        "created": response.get("created"),
        "model": response.get("model"),
    }
    if "system_fingerprint" in response:  # even null: as the upstream's own chunks had it
        base["system_fingerprint"] = response["system_fingerprint"]
    return base


def _chat_deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    message = choice.get("message") or {}
    deltas: list[dict[str, Any]] = [{"role": message.get("role", "assistant"), "content": ""}]
    if message.get("content"):
        deltas.append({"content": message["content"]})
    for position, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": position, **call}]})
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    return deltas


def replay(response: dict[str, Any], endpoint: Endpoint, *, include_usage: bool) -> list[bytes]:
    """A complete stored answer as the SSE events a streaming upstream would have sent."""
    base = _chunk_base(response, endpoint)
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    events: list[bytes] = []
    for choice in response.get("choices") or []:
        index = choice.get("index", 0)
        if endpoint == "chat":
            for delta in _chat_deltas(choice):
                part = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                events.append(event({**base, "choices": [part], **extra}))
            last = {"index": index, "delta": {}, "logprobs": None}
        else:
            text = {"index": index, "text": choice.get("text", ""), "logprobs": None}
            events.append(event({**base, "choices": [{**text, "finish_reason": None}], **extra}))
            last = {"index": index, "text": "", "logprobs": None}
        last["finish_reason"] = choice.get("finish_reason")
        events.append(event({**base, "choices": [last], **extra}))
    if include_usage:
        # Servers without a fingerprint (null on the other chunks) leave it off this one.
        tail = {k: v for k, v in base.items() if k != "system_fingerprint" or v is not None}
        events.append(event({**tail, "choices": [], "usage": response.get("usage")}))
    events.append(DONE)
    return events


class StreamAssembler:
    """Rebuilds the full answer from a stream's chunks; `result()` only if it ended normally."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._base: dict[str, Any] | None = None
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._failed = False

    def feed(self, data: str) -> dict[str, Any] | None:
        """Takes one event's data; returns the parsed chunk (None for `[DONE]` or junk)."""
        if data.strip() == "[DONE]":
            self._done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            self._failed = True
            return None
        if not isinstance(chunk, dict) or "error" in chunk:
            self._failed = True
            return None
        if self._base is None:
            self._base = {k: chunk.get(k) for k in ("id", "created", "model")}
            if "system_fingerprint" in chunk:
                self._base["system_fingerprint"] = chunk["system_fingerprint"]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            self._take(part)
        return chunk

    def _take(self, part: dict[str, Any]) -> None:
        index = int(part.get("index", 0))
        choice = self._choices.setdefault(
            index, {"role": "assistant", "content": [], "tools": {}, "finish_reason": None}
        )
        if self._endpoint == "completion":
            choice["content"].append(part.get("text") or "")
        else:
            delta = part.get("delta") or {}
            if delta.get("role"):
                choice["role"] = delta["role"]
            if delta.get("content"):
                choice["content"].append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = choice["tools"].setdefault(
                    int(call.get("index", 0)),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] = call.get("id") or slot["id"]
                slot["type"] = call.get("type") or slot["type"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
        if part.get("finish_reason"):
            choice["finish_reason"] = part["finish_reason"]

    def result(self) -> dict[str, Any] | None:
        """The full non-streamed answer, or None unless the stream completed normally."""
        if not self._done or self._failed or self._base is None or not self._choices:
            return None
        if any(c["finish_reason"] is None for c in self._choices.values()):
            return None
        choices = [self._render(i, c) for i, c in sorted(self._choices.items())]
        response: dict[str, Any] = {
            "id": self._base["id"],
            "object": "chat.completion" if self._endpoint == "chat" else "text_completion",
            "created": self._base["created"],
            "model": self._base["model"],
            "choices": choices,
            "usage": self._usage,
        }
        if "system_fingerprint" in self._base:
            response["system_fingerprint"] = self._base["system_fingerprint"]
        return response

    def _render(self, index: int, choice: dict[str, Any]) -> dict[str, Any]:
        text = "".join(choice["content"])
        if self._endpoint == "completion":
            return {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": choice["finish_reason"],
            }
        message: dict[str, Any] = {"role": choice["role"], "content": text or None}
        if choice["tools"]:
            message["tool_calls"] = [choice["tools"][i] for i in sorted(choice["tools"])]
        elif message["content"] is None:
            message["content"] = ""
        return {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
        }
