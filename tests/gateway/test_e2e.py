"""Backend + gateway as real processes on loopback, the real Redis, the official openai client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import redis

from tests.gateway.fakes import chunk_shape, free_port, sse_chunks

pytestmark = [pytest.mark.slow, pytest.mark.redis]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 11  # this suite's own database; its keys also carry a unique prefix
ADMIN = "e2e-admin"
KEYS = {"acme": "sk-acme", "globex": "sk-globex"}


@dataclass
class Running:
    url: str
    model: str
    sent: Counter[str] = field(default_factory=Counter)

    def client(self, tenant: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEYS[tenant], max_retries=0)

    def async_client(self, tenant: str = "acme") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=KEYS[tenant], max_retries=0)

    def admin(self, path: str) -> dict[str, Any]:
        reply = httpx.get(self.url + path, headers={"authorization": f"Bearer {ADMIN}"})
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result


def _start(args: list[str], log: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a process exited while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError("gateway not ready in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    redis_url = urlsplit(REDIS_URL)._replace(path=f"/{REDIS_DB}").geturl()
    store = redis.Redis.from_url(redis_url)
    try:
        store.ping()
    except redis.ConnectionError:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"no Redis at {REDIS_URL}, and CI must run this suite")
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"sluice-e2e-{uuid.uuid4().hex[:8]}"
    backend_port, gateway_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("e2e") / "processes.log"
    with open(log_path, "wb") as log:
        backend = _start(
            ["backend", "--port", str(backend_port), "--model", "demo", "--max-wait-ms", "5"], log
        )
        gateway = _start(
            [
                "gateway",
                "--port",
                str(gateway_port),
                "--upstreams",
                f"http://127.0.0.1:{backend_port}",
                "--redis-url",
                redis_url,
                "--cache-key-prefix",
                prefix,
                "--admin-token",
                ADMIN,
                "--api-keys",
                ",".join(f"{key}={tenant}" for tenant, key in KEYS.items()),
                "--log-level",
                "warning",
                # Generous limits: the test asserts behaviour, and test machines are often busy.
                "--embed-timeout-s",
                "30",
                "--redis-timeout-s",
                "2",
            ],
            log,
        )
        url = f"http://127.0.0.1:{gateway_port}"
        try:
            _wait_ready(url, [backend, gateway], timeout_s=150)
            model = httpx.get(url + "/v1/models", headers={"authorization": "Bearer sk-acme"})
            yield Running(url=url, model=model.json()["data"][0]["id"])
        except BaseException:
            print(log_path.read_text()[-4000:])
            raise
        finally:
            _stop(gateway)
            _stop(backend)
            for key in store.scan_iter(match=f"{prefix}:*", count=1000):
                store.delete(key)
            store.close()


def _chat(
    run: Running, text: str, *, tenant: str = "acme", **extra: Any
) -> tuple[str, str, dict[str, str]]:
    raw = run.client(tenant).chat.completions.with_raw_response.create(
        model=run.model,
        messages=[{"role": "user", "content": text}],
        temperature=0,
        max_tokens=8,
        **extra,
    )
    run.sent[raw.headers["x-cache"]] += 1
    return raw.headers["x-cache"], raw.parse().choices[0].message.content or "", dict(raw.headers)


def _until_hit(run: Running, text: str, **extra: Any) -> tuple[str, str, dict[str, str]]:
    """Asks again until the stored answer is found (stores finish just after the answer)."""
    for _ in range(50):
        result = _chat(run, text, **extra)
        if result[0] != "miss":
            return result
        time.sleep(0.05)
    raise AssertionError("never stored")


def test_repeat_hits_paraphrase_is_semantic_near_miss_misses(running: Running) -> None:
    first = _chat(running, "What is the capital of France?")
    assert first[0] == "miss" and first[1]
    again = _until_hit(running, "What is the capital of France?")
    assert again[:2] == ("hit", first[1])
    paraphrase = _chat(running, "could you tell me what the capital of France is")
    assert paraphrase[:2] == ("semantic", first[1])
    assert 0.0 < float(paraphrase[2]["x-cache-similarity"]) <= 1.0
    near_miss = _chat(running, "What is the capital of Spain?")
    assert near_miss[0] == "miss"


def test_a_paraphrase_from_the_held_out_test_split_is_a_semantic_hit(running: Running) -> None:
    """telecom-9: a domain the verifier was neither trained nor calibrated on, and other words."""
    first = _chat(running, "How do I transfer my number from another carrier?")
    assert first[0] == "miss"
    _until_hit(running, "How do I transfer my number from another carrier?")
    paraphrase = _chat(running, "how to port my # over from another carrier")
    assert paraphrase[:2] == ("semantic", first[1])


def test_a_question_the_embedder_cannot_read_gets_exact_caching_only(running: Running) -> None:
    """all-MiniLM-L6-v2 maps these two Chinese questions to cosine 1.0; they differ in meaning."""
    ship = _chat(running, "我的订单什么时候发货？")  # when will my order ship?
    assert ship[0] == "miss"
    assert _until_hit(running, "我的订单什么时候发货？")[:2] == ("hit", ship[1])
    refund = _chat(running, "我的订单什么时候退款？")  # when will my order be refunded?
    assert refund[0] == "miss"


def test_streaming_replay_of_a_hit_is_a_valid_stream_with_the_same_text(running: Running) -> None:
    async def scenario() -> None:
        client = running.async_client()
        ask: dict[str, Any] = {
            "model": running.model,
            "messages": [{"role": "user", "content": "Tell me about rivers and locks."}],
            "temperature": 0,
            "max_tokens": 12,
            "stream": True,
        }
        raw = await client.chat.completions.with_raw_response.create(**ask)
        assert raw.headers["x-cache"] == "miss"
        running.sent["miss"] += 1
        streamed = "".join(
            [c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]
        )
        for _ in range(50):
            async with httpx.AsyncClient() as http:
                reply = await http.post(
                    running.url + "/v1/chat/completions",
                    json=ask,
                    headers={"authorization": "Bearer sk-acme"},
                )
            running.sent[reply.headers["x-cache"]] += 1
            if reply.headers["x-cache"] == "hit":
                break
            await asyncio.sleep(0.05)
        assert reply.headers["x-cache"] == "hit"
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = reply.text.split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""]
        assert all(e.startswith("data: {") for e in events[:-2])
        replay = await client.chat.completions.create(**ask)
        running.sent["hit"] += 1
        replayed = "".join([c.choices[0].delta.content or "" async for c in replay if c.choices])
        assert replayed == streamed and streamed

    asyncio.run(scenario())


def test_streamed_miss_and_replayed_hit_have_the_same_chunk_shape(running: Running) -> None:
    ask = {
        "model": running.model,
        "messages": [{"role": "user", "content": "Describe a canal lock in one line."}],
        "temperature": 0,
        "max_tokens": 6,
        "stream": True,
    }
    headers = {"authorization": "Bearer sk-acme"}
    miss = httpx.post(running.url + "/v1/chat/completions", json=ask, headers=headers)
    assert miss.headers["x-cache"] == "miss"
    running.sent["miss"] += 1
    for _ in range(50):
        hit = httpx.post(running.url + "/v1/chat/completions", json=ask, headers=headers)
        running.sent[hit.headers["x-cache"]] += 1
        if hit.headers["x-cache"] == "hit":
            break
        time.sleep(0.05)
    missed, replayed = sse_chunks(miss.text), sse_chunks(hit.text)
    assert not any("usage" in c for c in missed + replayed), "usage was not asked for"
    assert chunk_shape(missed) == chunk_shape(replayed)


def test_without_redis_under_ci_the_suite_fails_instead_of_skipping() -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
               "-k", "repeat_hits"]  # fmt: skip
    for ci, expected in (("", 0), ("true", 1)):
        env = {**os.environ, "REDIS_URL": dead, "CI": ci}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == expected, done.stdout[-2000:]
    assert "no Redis at" in done.stdout


def test_tenants_are_isolated(running: Running) -> None:
    question = "Which river flows through the old town?"
    _chat(running, question, tenant="acme")
    assert _until_hit(running, question, tenant="acme")[0] == "hit"
    assert _chat(running, question, tenant="globex")[0] == "miss"
    listed = running.admin("/admin/cache/entries?tenant=acme&limit=100")["data"]
    assert question in {entry["question"] for entry in listed}
    assert {entry["namespace"] for entry in listed} == {"acme"}
    reply = httpx.delete(
        running.url + "/admin/cache",
        params={"tenant": "acme"},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert reply.json()["deleted"] >= 1
    assert _chat(running, question, tenant="acme")[0] == "miss"
    assert _until_hit(running, question, tenant="globex")[0] == "hit"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=running.url + "/v1", api_key="sk-nobody", max_retries=0
        ).models.list()


def test_stats_count_what_was_sent(running: Running) -> None:
    sent = running.sent
    stats = running.admin("/admin/stats")
    mine = stats["gateway"]["since_start"]["overall"]
    assert mine["requests"] == sum(sent.values())
    assert (mine["exact_hits"], mine["semantic_hits"], mine["misses"]) == (
        sent["hit"],
        sent["semantic"],
        sent["miss"],
    )
    assert mine["saved_tokens"] > 0
    backend = next(iter(stats["backends"].values()))
    assert backend["reachable"] and backend["batching"]["batches"] >= 1
