"""Replaying stored answers as streams and assembling streams into answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.sse import StreamAssembler, iter_events, replay

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}

TOOLS = {
    **CHAT,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
}

COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1700000000,
    "model": "m",
    "choices": [{"index": 0, "text": "four", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}


async def _bytes(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _roundtrip(answer: dict[str, Any], endpoint: Any, *, split: int) -> dict[str, Any] | None:
    blob = b"".join(replay(answer, endpoint, include_usage=True))
    pieces = [blob[i : i + split] for i in range(0, len(blob), split)]
    assembler = StreamAssembler(endpoint)
    async for _, data in iter_events(_bytes(pieces)):
        assert data is not None
        assembler.feed(data)
    return assembler.result()


@pytest.mark.parametrize("split", [1, 7, 10_000])
@pytest.mark.parametrize(
    ("answer", "endpoint"), [(CHAT, "chat"), (TOOLS, "chat"), (COMPLETION, "completion")]
)
async def test_replay_then_assemble_gives_back_the_answer(
    answer: dict[str, Any], endpoint: Any, split: int
) -> None:
    assert await _roundtrip(answer, endpoint, split=split) == answer


def test_replay_is_openai_shaped() -> None:
    events = replay(CHAT, "chat", include_usage=False)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_assembler_refuses_unfinished_or_failed_streams() -> None:
    chunk = {"id": "x", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"content": "hi"}, "finish_reason": None}
    ]}  # fmt: skip
    cut = StreamAssembler("chat")
    cut.feed(json.dumps(chunk))
    cut.feed("[DONE]")
    assert cut.result() is None, "no finish_reason"

    no_done = StreamAssembler("chat")
    chunk["choices"][0]["finish_reason"] = "stop"
    no_done.feed(json.dumps(chunk))
    assert no_done.result() is None, "no [DONE]"

    errored = StreamAssembler("chat")
    errored.feed(json.dumps(chunk))
    errored.feed(json.dumps({"error": {"message": "oom"}}))
    errored.feed("[DONE]")
    assert errored.result() is None

    fine = StreamAssembler("chat")
    fine.feed(json.dumps(chunk))
    fine.feed("[DONE]")
    result = fine.result()
    assert result is not None and result["choices"][0]["message"]["content"] == "hi"


async def test_iter_events_handles_crlf_and_a_cut_tail() -> None:
    raw = [b'data: {"a": 1}\r\n\r\nda', b"ta: [DONE]\r\n\r\ndata: partial"]
    events = [e async for e in iter_events(_bytes(raw))]
    assert [d for _, d in events] == ['{"a": 1}', "[DONE]", None]
