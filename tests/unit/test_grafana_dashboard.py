"""deploy/grafana/gridshift.json queries only series that gridshift really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.dispatch.exporter import DispatchState, dispatcher_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "gridshift.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
FAMILY_PREFIXES = ("gridshift_", "http_", "process_", "python_")


def _exported_series(text: str) -> set[str]:
    """Every sample name the exposition ``text`` declares (samples or not)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_dashboard_query_names_an_exported_series(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # Given what an API replica exports after serving a request (store families off, as in
    # compose) and what the dispatcher's exporter exports
    replica = settings.model_copy(update={"metrics_store": False})
    with TestClient(create_app(replica)) as client:
        assert client.get("/healthz").status_code == 200
        api_text = client.get("/metrics").text
    dispatch_text = generate_latest(dispatcher_registry(sessions, DispatchState())).decode()
    exported = _exported_series(api_text) | _exported_series(dispatch_text)

    # When every metric name in the dashboard's queries is collected
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        name
        for expr in exprs
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
        if name.startswith(FAMILY_PREFIXES)
    }

    # Then the dashboard covers every group and each name is exported by one of the targets
    assert any(n.startswith("http_") for n in used) and any(n.startswith("process_") for n in used)
    assert {"gridshift_queue_depth", "gridshift_dispatch_last_tick_age_seconds"} <= used
    assert used <= exported, sorted(used - exported)
    # and the replica really carries no store family while the dispatcher does
    assert "gridshift_batches" not in _exported_series(api_text)
    assert "gridshift_batches" in _exported_series(dispatch_text)


def test_prometheus_example_scrapes_the_api_and_the_dispatcher_exporter() -> None:
    # Given the example scrape configuration and the compose file
    scrape = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}

    # Then the dispatcher target is the port its command exports on
    command = compose["services"]["dispatch"]["command"]
    port = command[command.index("--metrics-port") + 1]
    assert jobs["gridshift-dispatch"]["static_configs"][0]["targets"] == [f"dispatch:{port}"]
    # and the API job finds every replica of the api service with an admin credential
    api = jobs["gridshift-api"]
    assert api["dns_sd_configs"][0]["names"] == ["api"]
    assert "credentials_file" in api["authorization"]
