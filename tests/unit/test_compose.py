"""docker-compose.yml: services gated on healthchecks, one-shot migrate, GPU workers, valid config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.fleet import load_fleet
from tests.conftest import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services of docker-compose.yml, YAML anchors and merge keys resolved."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"])


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever is installed."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_accepted_by_docker_compose_config() -> None:
    # Given docker compose on this machine (.ci/run installs one; locally: skip, under CI: fail)
    command = _compose_command()
    if command is None:
        unavailable("`docker compose` or `docker-compose` (apt-get install docker-compose)")
    env = {**os.environ, "POSTGRES_PASSWORD": "test-only"}

    # When compose validates the file with every profile enabled
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--profile", "vllm", "--profile", "monitoring"]
        + ["config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    # Then it is accepted
    assert result.returncode == 0, result.stderr


def test_servers_have_healthchecks_and_migrate_runs_once(services: dict[str, Any]) -> None:
    # Given the compose services / Then the servers others wait for can report health
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    # and migrate is a one-shot `db upgrade`
    assert services["migrate"]["command"] == ["gridshift", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"


def test_gridshift_services_wait_for_migrate_and_healthy_servers(services: dict[str, Any]) -> None:
    # Given every service that runs gridshift code against the database
    gated = [
        n for n, s in services.items() if n == "api" or n == "dispatch" or n.startswith("worker-")
    ]
    assert "api" in gated and "dispatch" in gated

    # Then each waits for a completed migration and healthy PostgreSQL and Redis
    for name in gated:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_each_worker_serves_one_pool_on_reserved_gpus(services: dict[str, Any]) -> None:
    # Given the worker services
    workers = {n: s for n, s in services.items() if n.startswith("worker-")}
    assert workers

    # Then each runs `gridshift worker --site S --pool P` with NVIDIA GPUs reserved
    for name, service in workers.items():
        command = service["command"]
        assert command[:2] == ["gridshift", "worker"], name
        assert "--site" in command and "--pool" in command, name
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"], name
        assert devices[0]["device_ids"], name
        assert service["build"]["args"]["EXTRAS"] == "gpu", name


def test_services_share_the_production_environment(services: dict[str, Any]) -> None:
    # Given the API, dispatcher and workers / Then they use PostgreSQL, Redis, one fleet, one data dir
    for name, service in services.items():
        if service.get("image", "").startswith("gridshift"):
            env = service["environment"]
            assert env["GRIDSHIFT_DATABASE_URL"].startswith("postgresql://"), name
            assert env["GRIDSHIFT_BROKER_URL"] == "redis://redis:6379/0", name
            assert env["GRIDSHIFT_FLEET"] == "/etc/gridshift/fleet.yaml", name
            assert env["GRIDSHIFT_DATA_DIR"] == "/data", name
            assert "gridshift-data:/data" in service["volumes"], name


def test_dispatch_runs_as_a_single_instance(services: dict[str, Any]) -> None:
    # Given the dispatcher / Then exactly one replica runs the tick
    assert services["dispatch"]["command"] == ["gridshift", "dispatch"]
    assert services["dispatch"]["deploy"]["replicas"] == 1


def test_optional_services_sit_behind_profiles(services: dict[str, Any]) -> None:
    # Given vllm serve and Flower / Then they only start when their profile is asked for
    vllm = [n for n in services if n.startswith("vllm-")]
    assert vllm
    assert all(services[n]["profiles"] == ["vllm"] for n in vllm)
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "flower" in services["flower"]["command"]


def test_each_worker_pool_exists_in_the_example_fleet(services: dict[str, Any]) -> None:
    # Given the example production fleet compose mounts by default
    fleet = load_fleet(REPO_ROOT / "deploy" / "fleet.yaml")
    pools = {(site.name, pool.name) for site in fleet.sites for pool in site.pools}

    # Then every worker serves a (site, pool) of that fleet, and every pool has a worker
    served = set()
    for name, service in services.items():
        if name.startswith("worker-"):
            command = service["command"]
            served.add((command[command.index("--site") + 1], command[command.index("--pool") + 1]))
    assert served == pools


def test_no_default_passwords_and_flower_only_on_loopback(services: dict[str, Any]) -> None:
    # Flower has no auth of its own: published on the host's loopback only
    assert all(str(p).startswith("127.0.0.1:") for p in services["flower"]["ports"])
    # and the example environment ships no password or key
    env = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#")
    )
    for name in ("POSTGRES_PASSWORD", "GRIDSHIFT_ADMIN_KEY", "FLOWER_BASIC_AUTH"):
        assert values[name] == "", name
    # /metrics is not public in the production environment
    assert services["api"]["environment"]["GRIDSHIFT_METRICS_PUBLIC"] == "false"
