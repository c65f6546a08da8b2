"""`sluice gateway` and `sluice serve`: start-up failures are one line naming the cause and the
fix (exit code 3, no traceback), and the embedded backend takes any free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.fakes import free_port
from tests.startup_helpers import next_port_taken, run_sluice, taken_port

pytestmark = pytest.mark.slow

REDIS_FIX = (
    "Start Redis there, or point --redis-url (or REDIS_URL) at one that runs; "
    "unset both to use the embedded in-process Redis."
)


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_a_taken_port_is_named(command: str) -> None:
    with taken_port() as port:
        line = run_sluice(command, "--port", str(port), "--no-semantic").the_line()
    assert line == (
        f"sluice {command}: port {port} on 127.0.0.1 is already in use. "
        "Stop the process listening there, or pass a free port to --port."
    )


def test_serve_names_a_taken_backend_port() -> None:
    with taken_port() as port:
        line = run_sluice(
            "serve", "--port", str(free_port()), "--backend-port", str(port), "--no-semantic"
        ).the_line()
    assert line.startswith(f"sluice serve: port {port} on 127.0.0.1 (--backend-port) is already")
    assert "leave it out to take any free port" in line


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_an_unreachable_redis_is_named_without_its_password(command: str) -> None:
    port = free_port()  # nothing listens there
    line = run_sluice(
        command,
        "--port",
        str(free_port()),
        "--redis-url",
        f"redis://:hunter2@127.0.0.1:{port}/0",
        "--no-semantic",
    ).the_line()
    assert line.startswith(
        f"sluice {command}: cannot reach Redis at redis://:***@127.0.0.1:{port}/0"
    )
    assert line.endswith(REDIS_FIX)
    assert "hunter2" not in line


def test_serve_relays_the_backends_line_for_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    failed = run_sluice(
        "serve", "--port", str(free_port()), "--model", str(missing), "--no-semantic"
    )
    line = failed.the_line()
    assert line.startswith(f"sluice backend: model folder {missing} does not exist. ")


def test_serve_takes_a_free_backend_port_when_the_next_one_is_taken() -> None:
    """The fault of #14: `serve --port P` died when P+1 was taken."""
    with next_port_taken() as port:
        env = {**os.environ, "SLUICE_GATEWAY_ADMIN_TOKEN": "startup-admin"}
        env.pop("REDIS_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
             "--no-semantic", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        try:
            ready = _wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=150)
            assert ready["ready"] is True
            (upstream,) = ready["upstreams"]
            assert upstream != f"http://127.0.0.1:{port + 1}"
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def _wait_ready(url: str, proc: subprocess.Popen[str], *, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            reply = httpx.get(url + "/ready", timeout=2)
            if reply.status_code == 200:
                body: dict[str, object] = reply.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve was not ready in time")


def test_an_invalid_setting_is_named_by_its_flag_and_variable() -> None:
    failed = run_sluice("gateway", "--no-semantic", env={"SLUICE_GATEWAY_PORT": "eighty"})
    line = failed.the_line()
    assert line.startswith(
        "sluice gateway: invalid settings: --port / SLUICE_GATEWAY_PORT: Input should be a valid"
    )
    assert line.endswith("Fix the flag or the variable named.")


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_a_missing_keys_file_is_named(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "keys.txt"
    line = run_sluice(
        command, "--port", str(free_port()), "--api-keys-file", str(missing), "--no-semantic"
    ).the_line()
    assert line == (
        f"sluice {command}: cannot read the API keys file {missing} (No such file or directory). "
        "Point --api-keys-file (SLUICE_GATEWAY_API_KEYS_FILE) at a readable file."
    )


def test_a_malformed_key_entry_is_named_without_the_key() -> None:
    line = run_sluice(
        "gateway", "--port", str(free_port()), "--api-keys", "sk-secret-123 team-a", "--no-semantic"
    ).the_line()
    assert line.startswith("sluice gateway: the API keys are not valid: API key entries must")
    assert "sk-secret-123" not in line


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_an_admin_token_that_is_also_an_api_key_is_refused(command: str) -> None:
    keys = "sk-a=team-a,sk-root-123=ops"
    args = ["--port", str(free_port()), "--api-keys", keys, "--admin-token", "sk-root-123"]
    line = run_sluice(command, *args, "--no-semantic").the_line()
    assert line == (
        f"sluice {command}: the admin token is also an API key, so that tenant could use admin "
        "routes. Set --admin-token (SLUICE_GATEWAY_ADMIN_TOKEN) to a value no API key has."
    )


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_a_missing_embedding_model_folder_is_named(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-embedder"
    line = run_sluice(
        command, "--port", str(free_port()), "--embedding-model", str(missing)
    ).the_line()
    assert line.startswith(f"sluice {command}: embedding model folder {missing} does not exist. ")
    assert "--no-semantic" in line


def test_a_folder_without_an_embedding_model_is_named(tmp_path: Path) -> None:
    line = run_sluice("gateway", "--port", str(free_port()), "--embedding-model", str(tmp_path))
    assert f"embedding model folder {tmp_path} holds no modules.json" in line.the_line()
