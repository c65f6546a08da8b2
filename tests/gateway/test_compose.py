"""compose.yaml and the Dockerfiles agree with the settings the services actually read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from backend.settings import BackendSettings
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def _settings_env(cls: type[Any], prefix: str) -> set[str]:
    return {prefix + name.upper() for name in cls.model_fields}


def test_services_healthchecks_and_order() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "backend", "gateway"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert services["gateway"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "backend": {"condition": "service_healthy"},
    }
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert "hf-cache" in _compose()["volumes"] and "redis-data" in _compose()["volumes"]
    devices = services["backend"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_environment_names_are_settings_fields() -> None:
    services = _compose()["services"]
    gateway_env, backend_env = _env(services["gateway"]), _env(services["backend"])
    known_gateway = _settings_env(GatewaySettings, "SLUICE_GATEWAY_") | {"REDIS_URL"}
    assert {k for k in gateway_env if k.startswith("SLUICE_") or k == "REDIS_URL"} <= known_gateway
    known_backend = _settings_env(BackendSettings, "SLUICE_BACKEND_")
    assert {k for k in backend_env if k.startswith("SLUICE_")} <= known_backend
    assert "SLUICE_BACKEND_MODEL" in backend_env


def test_ports_line_up() -> None:
    services = _compose()["services"]
    gateway_env, backend_env = _env(services["gateway"]), _env(services["backend"])
    gateway_port = gateway_env["SLUICE_GATEWAY_PORT"]
    assert f"{gateway_port}:{gateway_port}" in services["gateway"]["ports"]
    assert gateway_port == str(GatewaySettings.model_fields["port"].default)
    assert f":{gateway_port}/ready" in " ".join(services["gateway"]["healthcheck"]["test"])
    backend_port = backend_env["SLUICE_BACKEND_PORT"]
    upstream = urlsplit(gateway_env["SLUICE_GATEWAY_UPSTREAMS"])
    assert (upstream.hostname, str(upstream.port)) == ("backend", backend_port)
    assert f":{backend_port}/health" in " ".join(services["backend"]["healthcheck"]["test"])
    assert urlsplit(gateway_env["REDIS_URL"]).hostname == "redis"
    # The environment actually parses into the settings classes.
    upstreams = gateway_env["SLUICE_GATEWAY_UPSTREAMS"]
    assert GatewaySettings.model_validate({"upstreams": upstreams}).upstreams == [
        "http://backend:8001"
    ]
    assert BackendSettings(port=int(backend_port)).port == int(backend_port)


def test_dockerfiles_exist_and_run_the_sluice_command() -> None:
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        text = dockerfile.read_text()
        assert f'CMD ["sluice", "{name}"]' in text
        assert "EXPOSE" in text


def test_time_limits_suit_real_models() -> None:
    services = _compose()["services"]
    backend_env, gateway_env = _env(services["backend"]), _env(services["gateway"])

    def default(value: str) -> float:
        """The default of a `${VAR:-default}` value, or the value itself."""
        return float(value.rsplit(":-", 1)[-1].rstrip("}"))

    backend_s = default(backend_env["SLUICE_BACKEND_TIMEOUT_S"])
    assert backend_s >= 600 > BackendSettings.model_fields["timeout_s"].default
    # The gateway waits for a whole non-streamed answer: longer than the backend may take.
    assert default(gateway_env["SLUICE_GATEWAY_UPSTREAM_TIMEOUT_S"]) > backend_s
    assert BackendSettings(timeout_s=backend_s).timeout_s == backend_s


def test_gateway_image_has_hnsw_without_a_compiler_in_the_final_stage() -> None:
    text = (ROOT / "docker" / "Dockerfile.gateway").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) >= 2, "a build stage and a slim final stage"
    build, final = stages[-2], stages[-1]
    assert "build-essential" in build and '".[hnsw]"' in build
    assert "build-essential" not in final and "apt-get" not in final
    assert "COPY --from=" in final


@pytest.mark.parametrize(
    ("build_step", "setting"),
    [
        (r"python -m cache\.onnx_export --cache-dir (\S+) --int8", "embed_cache_dir"),
        (r"python -m cache\.semantic\.train_verifier --cache-dir (\S+)", "verifier_cache_dir"),
    ],
    ids=["embedding export", "trained verifier"],
)
def test_gateway_image_carries_what_its_build_made_where_its_settings_point(
    build_step: str, setting: str
) -> None:
    text = (ROOT / "docker" / "Dockerfile.gateway").read_text()
    build, final = text.split("\nFROM ")[-2:]
    match = re.search(build_step, build)
    assert match, f"the build stage runs {build_step}"
    folder = match.group(1)
    assert f"COPY --from=build {folder} {folder}" in final
    env = re.search(rf"SLUICE_GATEWAY_{setting.upper()}=(\S+)", final)
    assert env and env.group(1) == folder
    parsed = GatewaySettings.model_validate({setting: folder})
    assert getattr(parsed, setting) == Path(folder)


def test_the_default_embedding_runtime_is_auto_which_the_image_carries_both_for() -> None:
    # The default picks int8 on CPUs that multiply it exactly: the image must carry both.
    assert GatewaySettings.model_fields["embed_backend"].default == "auto"
