"""The backend (seeded demo model, CPU) and a gateway in front of it, as real processes on
loopback, started once for every hostile-input test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.fakes import free_port

ADMIN = "hostile-admin"
API_KEY = "sk-hostile"


@dataclass(frozen=True)
class Live:
    """Base URLs of the running services, and the headers each needs."""

    backend: str
    gateway: str

    def headers(self, service: str) -> dict[str, str]:
        return {"authorization": f"Bearer {API_KEY}"} if service == "gateway" else {}

    def url(self, service: str) -> str:
        return self.gateway if service == "gateway" else self.backend


def _start(args: list[str], log: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    env.pop("REDIS_URL", None)  # the embedded in-process Redis: nothing to clean up
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a process exited while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    backend_port, gateway_port = free_port(), free_port()
    log_path: Path = tmp_path_factory.mktemp("hostile") / "processes.log"
    with open(log_path, "wb") as log:
        # A short context keeps every generation short, so the fuzzers spend their time on input.
        backend = _start(
            ["backend", "--port", str(backend_port), "--model", "demo", "--max-model-len", "96",
             "--max-wait-ms", "2", "--log-level", "warning"],
            log,
        )  # fmt: skip
        gateway = _start(
            ["gateway", "--port", str(gateway_port),
             "--upstreams", f"http://127.0.0.1:{backend_port}",
             "--admin-token", ADMIN, "--api-keys", f"{API_KEY}=hostile",
             "--max-body-bytes", str(4 * 1024 * 1024),
             "--embed-timeout-s", "30", "--log-level", "warning"],
            log,
        )  # fmt: skip
        live = Live(f"http://127.0.0.1:{backend_port}", f"http://127.0.0.1:{gateway_port}")
        try:
            _wait(live.gateway + "/ready", [backend, gateway], timeout_s=180)
            yield live
        except BaseException:
            print(log_path.read_text()[-4000:])
            raise
        finally:
            _stop(gateway)
            _stop(backend)
    logged = log_path.read_text()
    # A handler that answered 500 would have logged its traceback here.
    assert "Traceback" not in logged, logged[-4000:]
