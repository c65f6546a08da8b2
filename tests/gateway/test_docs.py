"""docs/gateway.md documents every setting the gateway reads."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import GatewaySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def test_every_setting_is_documented_with_its_env_var_and_flag() -> None:
    text = DOC.read_text()
    for name in GatewaySettings.model_fields:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, name
        assert f"`SLUICE_GATEWAY_{name.upper()}`" in row
        assert f"`--{name.replace('_', '-')}`" in row
