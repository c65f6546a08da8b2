"""deploy/: the Grafana dashboard names only metrics that a gateway and a backend serve at
/metrics, and the Prometheus example scrapes both."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app as create_backend
from backend.settings import BackendSettings
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from tests.backend.fakes import FakeEngine
from tests.gateway.fakes import FakeResponseCache, serving

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def _queries(node: Any) -> list[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [q for v in node.values() for q in _queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in _queries(v)]
    return []


def _served(text: str) -> set[str]:
    """The names a query can use for what this exposition serves, samples or not yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_on_the_dashboard_is_served() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "sluice.json").read_text())
    queries = _queries(dashboard)
    named = set(re.findall(r"\bsluice_[a-z_]+\b", " ".join(queries)))
    assert {"sluice_gateway_requests_total", "sluice_backend_batch_size_bucket"} <= named

    backend_app = create_backend(BackendSettings(), engine=FakeEngine())
    async with serving(backend_app) as backend_url:
        settings = GatewaySettings(upstreams=[backend_url], admin_token="a")
        async with (
            serving(create_gateway(settings, cache=FakeResponseCache())) as gateway_url,
            httpx.AsyncClient(timeout=10) as http,
        ):
            body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
            body["max_tokens"] = 4
            reply = await http.post(gateway_url + "/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            served = _served((await http.get(gateway_url + "/metrics")).text)
            served |= _served((await http.get(backend_url + "/metrics")).text)
    assert sorted(named - served) == []
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_prometheus_example_scrapes_a_gateway_and_a_backend() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"sluice-gateway", "sluice-backend"}
    compose = yaml.safe_load((DEPLOY.parent / "compose.yaml").read_text())
    upstream = compose["services"]["gateway"]["environment"]["SLUICE_GATEWAY_UPSTREAMS"]
    for job, target in (("sluice-gateway", "gateway:8000"), ("sluice-backend", upstream[7:])):
        assert jobs[job]["metrics_path"] == "/metrics"
        assert jobs[job]["static_configs"][0]["targets"] == [target]
