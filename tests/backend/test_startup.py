"""`sluice backend` refuses to start with one line naming the cause and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.startup_helpers import run_sluice, taken_port

pytestmark = pytest.mark.slow


def test_a_taken_port_is_named_before_the_model_loads() -> None:
    with taken_port() as port:
        line = run_sluice("backend", "--port", str(port), timeout_s=60).the_line()
    assert line == (
        f"sluice backend: port {port} on 127.0.0.1 is already in use. "
        "Stop the process listening there, or pass a free port to --port."
    )


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    line = run_sluice("backend", "--port", "0", "--model", str(missing)).the_line()
    assert line.startswith(f"sluice backend: model folder {missing} does not exist. ")
    assert "--model" in line


def test_a_folder_without_a_model_is_named(tmp_path: Path) -> None:
    line = run_sluice("backend", "--port", "0", "--model", str(tmp_path)).the_line()
    assert f"model folder {tmp_path} holds no config.json" in line
    assert "--model" in line


def test_a_hub_id_that_cannot_be_fetched_is_named() -> None:
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    line = run_sluice(
        "backend", "--port", "0", "--model", "sluice-tests/no-such-model", env=offline
    ).the_line()
    assert line.startswith("sluice backend: cannot load the model 'sluice-tests/no-such-model': ")
    assert "--model" in line


def test_an_invalid_setting_is_named_by_its_flag_and_variable() -> None:
    line = run_sluice(
        "backend", "--port", "0", env={"SLUICE_BACKEND_MAX_BATCH_SIZE": "0"}
    ).the_line()
    assert line == (
        "sluice backend: invalid settings: --max-batch-size / SLUICE_BACKEND_MAX_BATCH_SIZE: "
        "Input should be greater than or equal to 1. Fix the flag or the variable named."
    )
