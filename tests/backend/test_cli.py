"""`sluice backend` flags and SLUICE_BACKEND_* variables name the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.cli import parse_settings
from backend.errors import StartupError
from backend.settings import BackendSettings


def test_flags_are_kebab_case_names_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_BACKEND_MAX_QUEUE", "7")
    monkeypatch.setenv("SLUICE_BACKEND_MAX_WAIT_MS", "3")
    s = parse_settings(
        ["--model", "bench", "--port", "9001", "--max-batch-size", "4", "--max-wait-ms", "25"]
    )
    assert (s.model, s.port, s.max_batch_size, s.max_wait_ms) == ("bench", 9001, 4, 25)
    assert s.max_queue == 7
    assert parse_settings([]).max_wait_ms == 3


def test_bad_flag_values_exit_with_the_flag_named() -> None:
    with pytest.raises(StartupError, match="--max-batch-size / SLUICE_BACKEND_MAX_BATCH_SIZE"):
        parse_settings(["--max-batch-size", "0"])
    with pytest.raises(StartupError):
        parse_settings(["--batching", "sometimes"])


def test_every_setting_is_documented_with_its_env_var_and_flag() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "backend.md").read_text()
    for name in BackendSettings.model_fields:
        assert f"`SLUICE_BACKEND_{name.upper()}`" in text, name
        assert f"`--{name.replace('_', '-')}`" in text, name
