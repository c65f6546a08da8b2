"""The backend over real HTTP (uvicorn on a loopback port) with a fake engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from backend.app import create_app
from backend.engines.torch_engine import TorchEngine
from backend.settings import BackendSettings, BatchingName
from tests.backend.fakes import FakeEngine


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Runs the app under uvicorn on a free loopback port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def backend(engine: FakeEngine, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(BackendSettings(**settings), engine=engine)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def sse_events(raw: str) -> list[Any]:
    """Parses an SSE body into JSON payloads, keeping the literal "[DONE]"."""
    events: list[Any] = []
    for block in raw.strip().split("\n\n"):
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def metric(text: str, name: str) -> float:
    """The value of one sample line of Prometheus text."""
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def wait_started(engine: FakeEngine) -> None:
    assert await asyncio.to_thread(engine.batch_started.wait, 5)
    engine.batch_started.clear()


async def test_completion_shape_and_usage() -> None:
    async with backend(FakeEngine()) as client:
        r = await client.post(
            "/v1/completions",
            json={"model": "fake-model", "prompt": "abc", "max_tokens": 4, "user": "u1"},
        )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "fake-model"
    assert body["choices"] == [
        {"index": 0, "text": "defg", "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_openai_client_chat_stop_and_stream() -> None:
    engine = FakeEngine()
    async with backend(engine) as client:
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key="unused")
        messages: Any = [{"role": "user", "content": "hi"}]
        # The fake's chat prompt is 19 characters, so it writes "tuvwx..."; cut at "w".
        done = await sdk.chat.completions.create(
            model="fake-model", messages=messages, max_tokens=10, stop=["w"], temperature=0
        )
        assert done.choices[0].message.content == "tuv"
        assert done.choices[0].finish_reason == "stop"
        assert done.usage is not None and done.usage.prompt_tokens == 19
        stream = await sdk.chat.completions.create(
            model="fake-model",
            messages=messages,
            max_completion_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        await sdk.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tuvwx"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


async def test_chat_stream_is_openai_sse_format() -> None:
    async with backend(FakeEngine()) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    first, *middle, final, usage, _ = events
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"] for e in middle] == [
        {"content": "t"},
        {"content": "u"},
        {"content": "v"},
    ]
    assert all(e["choices"][0]["finish_reason"] is None and e["usage"] is None for e in middle)
    assert final["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22}
    assert len({e["id"] for e in events[:-1]}) == 1


async def test_completion_stream_without_usage() -> None:
    async with backend(FakeEngine()) as client:
        r = await client.post(
            "/v1/completions", json={"prompt": "abc", "max_tokens": 2, "stream": True}
        )
    events = sse_events(r.text)
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["d", "e"]
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, "length"]
    assert "usage" not in events[0]
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        ("/v1/completions", b"{not json", 400, None, "invalid_json"),
        ("/v1/completions", b"[1, 2]", 400, None, None),
        ("/v1/completions", b'{"prompt": "x", "user": ' + b"[" * 99 + b"]" * 99 + b"}", 400,
         None, None),
        ("/v1/completions", b"[" * 100_000, 400, None, None),
        ("/v1/completions", b'{"prompt": "x\\ud800"}', 400, None, None),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": NaN}', 400, None, "invalid_json"),
        ("/v1/completions", {"prompt": "x", "seed": 2**64}, 400, "seed", None),
        ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens", None),
        ("/v1/completions", {"prompt": "x", "temperature": 3}, 400, "temperature", None),
        ("/v1/completions", {"max_tokens": 5}, 400, "prompt", None),
        ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n", "unsupported_parameter"),
        ("/v1/completions", {"prompt": "x", "echo": True}, 400, "echo", "unsupported_parameter"),
        ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt", None),
        ("/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "model", "model_not_found"),
        ("/v1/completions", {"prompt": "x" * 64}, 400, "prompt", "context_length_exceeded"),
        ("/v1/completions", {"prompt": "x" * 60, "max_tokens": 5}, 400, "prompt",
         "context_length_exceeded"),
        ("/v1/completions", {"prompt": "x", "min_tokens": 9, "max_tokens": 2}, 400,
         "min_tokens", None),
        ("/v1/completions", {"prompt": [1, -1]}, 400, "prompt", None),
        ("/v1/completions", {"prompt": [1, 256]}, 400, "prompt", None),
        ("/v1/completions", {"prompt": [[70, 10**9]]}, 400, "prompt", None),
        ("/v1/chat/completions", {"messages": []}, 400, "messages", None),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
         "tools": [{"type": "function"}]}, 400, "tools", "unsupported_parameter"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
         "logprobs": True}, 400, "logprobs", "unsupported_parameter"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
         "messages.0.content.0.type", None),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400,
         "messages", None),
        ("/v1/nothing", {}, 404, None, "not_found"),
    ],
)  # fmt: skip
async def test_error_shapes(
    path: str, body: Any, status: int, param: str | None, code: str | None
) -> None:
    async with backend(FakeEngine()) as client:
        if isinstance(body, bytes):
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)


async def test_harmless_fields_are_accepted() -> None:
    async with backend(FakeEngine()) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
                "max_tokens": 1,
                "n": 1,
                "logprobs": False,
                "user": "someone",
                "metadata": {"a": "b"},
                "store": False,
                "seed": 7,
                "ignore_eos": True,
                "min_tokens": 1,
                "stream_options": None,
            },
        )
    assert r.status_code == 200, r.text


async def test_models_health_and_metrics_names() -> None:
    async with backend(FakeEngine(), served_model_name="served") as client:
        models = (await client.get("/v1/models")).json()
        health = await client.get("/health")
        ok = await client.post("/v1/completions", json={"model": "served", "prompt": "ab"})
        text = (await client.get("/metrics")).text
    assert models["data"][0]["id"] == "served" and models["data"][0]["max_model_len"] == 64
    assert health.status_code == 200 and ok.status_code == 200
    for name in (
        "sluice_backend_queue_depth",
        "sluice_backend_batch_size_bucket",
        "sluice_backend_queue_wait_seconds_bucket",
        "sluice_backend_batch_run_seconds_bucket",
        "sluice_backend_generated_tokens_total",
        "sluice_backend_prompt_tokens_total",
        'sluice_backend_requests_total{outcome="ok"}',
    ):
        assert name in text
    assert metric(text, "sluice_backend_generated_tokens_total") == 16
    assert metric(text, "sluice_backend_prompt_tokens_total") == 2


async def test_batches_form_by_size_cap_and_window() -> None:
    engine = FakeEngine()
    # A window much longer than the spread of six concurrent arrivals on a busy machine.
    async with backend(engine, max_batch_size=4, max_wait_ms=1500) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 2})
                for i in range(6)
            )
        )
        text = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in replies)
    assert sorted(len(b) for b in engine.batches) == [2, 4]
    assert metric(text, "sluice_backend_batch_size_count") == 2
    assert metric(text, "sluice_backend_batch_size_sum") == 6


async def test_full_queue_answers_429_with_retry_after() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    async with backend(engine, max_batch_size=1, max_wait_ms=0, max_queue=1) as client:
        body = {"prompt": "x", "max_tokens": 1}
        running = asyncio.create_task(client.post("/v1/completions", json=body))
        await wait_started(engine)
        queued = asyncio.create_task(client.post("/v1/completions", json=body))
        while "sluice_backend_queue_depth 1.0" not in (await client.get("/metrics")).text:
            await asyncio.sleep(0.01)
        rejected = await client.post("/v1/completions", json=body)
        engine.hold.set()
        assert (await running).status_code == 200 and (await queued).status_code == 200
    assert rejected.status_code == 429
    assert rejected.headers["retry-after"] == "1"
    assert rejected.json()["error"]["code"] == "queue_full"


async def test_deadline_answers_504() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    async with backend(engine, max_wait_ms=0, timeout_s=0.3) as client:
        r = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
        engine.hold.set()
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "timeout"


async def test_engine_failure_fans_out_and_service_continues() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    engine.fail_next = RuntimeError("device lost")
    async with backend(engine, max_batch_size=8, max_wait_ms=100) as client:
        body = {"prompt": "x", "max_tokens": 2}
        tasks = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(3)]
        await wait_started(engine)
        engine.hold.set()
        failed = await asyncio.gather(*tasks)
        after = await client.post("/v1/completions", json=body)
    assert [r.status_code for r in failed] == [500] * 3
    assert all("device lost" in r.json()["error"]["message"] for r in failed)
    assert after.status_code == 200


async def test_token_ids_at_the_vocabulary_edge() -> None:
    engine = FakeEngine()
    async with backend(engine) as client:
        ok = await client.post("/v1/completions", json={"prompt": [0, 255], "max_tokens": 2})
        bad = await client.post("/v1/completions", json={"prompt": [0, 256], "max_tokens": 2})
    assert ok.status_code == 200
    assert bad.status_code == 400
    assert "256" in bad.json()["error"]["message"]
    assert len(engine.rows) == 1  # the refused request never reached the engine


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_a_failing_row_fails_only_its_own_request(batching: BatchingName) -> None:
    engine = FakeEngine()
    engine.hold.clear()
    engine.fail_token = ord("!")
    async with backend(engine, max_batch_size=8, max_wait_ms=100, batching=batching) as client:
        bad = asyncio.create_task(
            client.post("/v1/completions", json={"prompt": "x!", "max_tokens": 3})
        )
        good = asyncio.create_task(
            client.post("/v1/completions", json={"prompt": "xy", "max_tokens": 3})
        )
        await wait_started(engine)
        engine.hold.set()
        failed, done = await bad, await good
        text = (await client.get("/metrics")).text
    assert len(engine.batches) == 1 and len(engine.batches[0]) == 2
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "engine_error")
    assert "row failure at step 0" in error["message"]
    assert done.status_code == 200 and done.json()["choices"][0]["text"] == "cde"
    assert metric(text, 'sluice_backend_requests_total{outcome="error"}') == 1
    assert metric(text, 'sluice_backend_requests_total{outcome="ok"}') == 1


async def test_a_row_failing_mid_stream_ends_with_an_error_event() -> None:
    engine = FakeEngine()
    engine.fail_token, engine.fail_step = ord("!"), 2
    async with backend(engine, max_wait_ms=0) as client:
        r = await client.post(
            "/v1/completions", json={"prompt": "x!", "max_tokens": 5, "stream": True}
        )
    assert r.status_code == 200
    events = sse_events(r.text)
    assert [e["choices"][0]["text"] for e in events[:2]] == ["c", "d"]
    assert events[2]["error"]["code"] == "engine_error"
    assert "row failure at step 2" in events[2]["error"]["message"]
    assert events[3:] == ["[DONE]"]


async def test_streaming_disconnect_cancels_the_row() -> None:
    engine = FakeEngine(step_delay_s=0.01, max_model_len=100_000)
    async with backend(engine, max_wait_ms=0) as client:
        body = {"prompt": "x", "max_tokens": 50_000, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break
        (rid,) = engine.rows
        for _ in range(300):
            if rid in engine.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        text = (await client.get("/metrics")).text
    assert engine.rows[rid].cancelled()
    assert rid in engine.seen_cancelled
    assert metric(text, 'sluice_backend_requests_total{outcome="cancelled"}') == 1


async def test_queued_client_that_leaves_is_removed() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    async with backend(engine, max_batch_size=1, max_wait_ms=0) as client:
        body = {"prompt": "x", "max_tokens": 1}
        running = asyncio.create_task(client.post("/v1/completions", json=body))
        await wait_started(engine)
        async with httpx.AsyncClient(base_url=client.base_url) as other:
            leaving = asyncio.create_task(other.post("/v1/completions", json=body))
            while "sluice_backend_queue_depth 1.0" not in (await client.get("/metrics")).text:
                await asyncio.sleep(0.01)
            leaving.cancel()
        while "sluice_backend_queue_depth 0.0" not in (await client.get("/metrics")).text:
            await asyncio.sleep(0.01)
        engine.hold.set()
        assert (await running).status_code == 200
    assert len(engine.batches) == 1


async def test_graceful_drain_finishes_work_and_refuses_new() -> None:
    engine = FakeEngine()
    engine.hold.clear()
    app = create_app(BackendSettings(max_batch_size=1, max_wait_ms=0), engine=engine)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"prompt": "x", "max_tokens": 2}
            inflight = [
                asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(2)
            ]
            await wait_started(engine)
            drain = asyncio.create_task(state["service"].batcher.drain())  # type: ignore[index]
            await asyncio.sleep(0.02)
            refused = await client.post("/v1/completions", json=body)
            health = await client.get("/health")
            engine.hold.set()
            done = await asyncio.gather(*inflight)
            await drain
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 503
    assert [r.status_code for r in done] == [200, 200]
    assert [r.json()["choices"][0]["text"] for r in done] == ["bc"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_demo_model_greedy_batched_equals_alone(batching: BatchingName) -> None:
    app = create_app(
        BackendSettings(
            model="demo", device="cpu", max_batch_size=4, max_wait_ms=1000, batching=batching
        )
    )
    prompts = ["Hello", "The quick brown fox jumps over", "a", "Caches answer questions. Why?"]

    def body(prompt: str) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True}

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        alone = [(await client.post("/v1/completions", json=body(p))).json() for p in prompts]
        together = await asyncio.gather(
            *(client.post("/v1/completions", json=body(p)) for p in prompts)
        )
        text = (await client.get("/metrics")).text
    assert [r.json()["choices"][0]["text"] for r in together] == [
        a["choices"][0]["text"] for a in alone
    ]
    assert all(a["usage"]["completion_tokens"] == 12 for a in alone)
    if batching == "window":
        # Four single-request batches, then one batch of four.
        assert metric(text, "sluice_backend_batch_size_count") == 5
        assert metric(text, "sluice_backend_batch_size_sum") == 8


@pytest.mark.slow
async def test_demo_model_refuses_an_unknown_token_id_and_serves_its_neighbours(
    demo_engine: TorchEngine,
) -> None:
    vocab = demo_engine.vocab_size
    app = create_app(BackendSettings(max_batch_size=4, max_wait_ms=300), engine=demo_engine)

    def body(prompt: list[int] | str) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True}

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        good = asyncio.create_task(client.post("/v1/completions", json=body("Hello there")))
        edge = asyncio.create_task(client.post("/v1/completions", json=body([5, vocab - 1])))
        bad = await client.post("/v1/completions", json=body([5, vocab]))
        done = await asyncio.gather(good, edge)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prompt"
    assert str(vocab) in bad.json()["error"]["message"]
    assert [r.status_code for r in done] == [200, 200]
    assert [r.json()["usage"]["completion_tokens"] for r in done] == [6, 6]
