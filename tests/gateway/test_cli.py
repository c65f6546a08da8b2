"""The `sluice` command: flags and settings, the stats table, and `sluice serve` end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import fakeredis
import httpx
import pytest
from prometheus_client import CollectorRegistry

from cache.stats import StatsStore
from gateway.cli import build_parser, main, settings_from
from gateway.settings import GatewaySettings
from gateway.stats import RequestStats
from gateway.table import render_stats
from tests.gateway.conftest import ADMIN, Stack
from tests.gateway.fakes import free_port


def test_every_setting_has_a_flag_and_flags_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["gateway"].format_help()  # type: ignore[union-attr]
    for name in GatewaySettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert f"SLUICE_GATEWAY_{name.upper()}" in help_text.replace("\n", "").replace(" ", "")
    monkeypatch.setenv("SLUICE_GATEWAY_MAX_BODY_BYTES", "1234")
    monkeypatch.setenv("SLUICE_GATEWAY_PORT", "9000")
    args = build_parser().parse_args(
        ["gateway", "--port", "9100", "--no-semantic", "--upstreams", "http://a:1,http://b:2",
         "--redis-url", "redis://r:6379/3", "--semantic-threshold", "0.9"]
    )  # fmt: skip
    settings = settings_from(args)
    assert settings.port == 9100 and settings.max_body_bytes == 1234
    assert settings.semantic is False and settings.semantic_threshold == 0.9
    assert settings.upstreams == ["http://a:1", "http://b:2"]
    assert settings.redis_url == "redis://r:6379/3"


async def test_stats_table_shows_overall_tenants_and_models() -> None:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    stats = RequestStats(StatsStore(redis, prefix="t"), registry=CollectorRegistry())
    stats.record("acme", "m1", "exact", latency_ms=0.8, saved_tokens=12)
    stats.record("acme", "m1", "miss", latency_ms=420.0)
    text = render_stats({"gateway": await stats.snapshot(), "backends": {}})
    lines = text.splitlines()
    overall = next(line for line in lines if line.startswith("overall"))
    assert overall.split()[1:4] == ["2", "1", "0"]
    assert "50.0%" in overall and "12" in overall
    assert any(line.startswith("tenant acme") for line in lines)
    assert [line.split()[:3] for line in lines if line.startswith(("last", "since"))] == [
        ["last", "minute", "2"],
        ["last", "hour", "2"],
        ["since", "start", "2"],
    ]
    assert any(line.startswith("model m1") for line in lines)


async def test_stats_command_prints_a_running_gateways_numbers(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with httpx.AsyncClient() as http:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        await http.post(stack.url + "/v1/chat/completions", json=body)
    monkeypatch.setenv("SLUICE_GATEWAY_ADMIN_TOKEN", ADMIN)
    assert await asyncio.to_thread(main, ["stats", "--url", stack.url]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("overall")).split()[1] == "1"
    assert "Backends" in out
    monkeypatch.setenv("SLUICE_GATEWAY_ADMIN_TOKEN", "wrong")
    assert await asyncio.to_thread(main, ["stats", "--url", stack.url]) == 1


def _serve(port: int, backend_port: int, stderr: Any) -> tuple[subprocess.Popen[str], str]:
    """Starts `sluice serve`; returns it and its banner once it is ready."""
    env = {**os.environ, "SLUICE_GATEWAY_ADMIN_TOKEN": "serve-admin"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
         "--backend-port", str(backend_port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError("serve exited before it was ready")
        banner.append(line)
        if "Terminal stats" in line:
            break
    return proc, "".join(banner)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_serve_runs_backend_and_gateway_together(tmp_path: Any) -> None:
    port, backend_port = free_port(), free_port()
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as stderr:
        proc, text = _serve(port, backend_port, stderr)
    try:
        assert f"http://127.0.0.1:{port}/v1" in text and "/admin/stats" in text
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/ready").status_code == 200
        ask: dict[str, Any] = {
            "model": "demo",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 4,
            "temperature": 0,
        }
        first = httpx.post(base + "/v1/chat/completions", json=ask, timeout=60)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        for _ in range(50):
            again = httpx.post(base + "/v1/chat/completions", json=ask, timeout=60)
            if again.headers["x-cache"] == "hit":
                break
            time.sleep(0.05)
        assert again.json()["choices"] == first.json()["choices"]
        admin = httpx.get(base + "/admin/stats", headers={"authorization": "Bearer serve-admin"})
        assert admin.status_code == 200
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=30)
        finally:
            proc.kill()
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{backend_port}/health")
    logged = errors.read_text()
    assert "Traceback" not in logged and "ERROR" not in logged, logged[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_serve_killed_with_sigkill_leaves_no_backend_behind() -> None:
    proc, _ = _serve(free_port(), free_port(), subprocess.DEVNULL)
    try:
        backends = _children(proc.pid)
        assert backends, "serve runs its backend as a child process"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in backends) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in backends if _alive(pid)]
    for pid in left:  # clean up before failing
        os.kill(pid, 9)
    assert not left, "the backend outlived a SIGKILLed serve"
