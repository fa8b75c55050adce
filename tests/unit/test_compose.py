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


@pytest.mark.slow  # starts processes
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
    assert services["dispatch"]["command"][:2] == ["gridshift", "dispatch"]
    assert services["dispatch"]["deploy"]["replicas"] == 1


def test_optional_services_sit_behind_profiles(services: dict[str, Any]) -> None:
    # Given vllm serve and Flower / Then they only start when their profile is asked for
    vllm = [n for n in services if n.startswith("vllm-")]
    assert vllm
    assert all(services[n]["profiles"] == ["vllm"] for n in vllm)
    assert services["flower"]["profiles"] == ["monitoring"]
    assert " flower " in services["flower"]["command"][0]


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


def _long_running(services: dict[str, Any]) -> list[str]:
    """Every service that stays up (the one-shot `migrate` aside)."""
    return [n for n, s in services.items() if s.get("restart") != "no"]


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    # Given every service that stays up (servers, API, dispatcher, workers, vllm, flower)
    names = _long_running(services)
    assert {"postgres", "redis", "api", "dispatch", "flower"} <= set(names)

    # Then each has a healthcheck test that compose runs
    for name in names:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_api_healthcheck_is_readiness(services: dict[str, Any]) -> None:
    # Given the API / Then compose waits on readiness (database, disk), not bare liveness
    assert "127.0.0.1:8080/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_dispatch_healthcheck_reads_its_own_exporter(services: dict[str, Any]) -> None:
    # Given the dispatcher's command / Then its exporter port is the one the healthcheck reads
    command = services["dispatch"]["command"]
    port = command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
    assert f"127.0.0.1:{port}/healthz" in " ".join(services["dispatch"]["healthcheck"]["test"])
    # and API replicas leave the store families to it (a sum over targets counts once)
    assert services["api"]["environment"]["GRIDSHIFT_METRICS_STORE"] == "false"


def test_worker_healthcheck_pings_its_own_pool(services: dict[str, Any]) -> None:
    # Given each worker / Then its healthcheck pings a worker of the same site and pool
    for name, service in services.items():
        if name.startswith("worker-"):
            command, test = service["command"], service["healthcheck"]["test"]
            assert test[1:3] == ["gridshift", "ping-worker"], name
            for flag in ("--site", "--pool"):
                assert test[test.index(flag) + 1] == command[command.index(flag) + 1], name


def test_gpu_workers_get_hf_token_and_a_model_cache_volume(services: dict[str, Any]) -> None:
    # Given the GPU workers / Then they get HF_TOKEN and keep downloaded weights in a volume
    workers = {n: s for n, s in services.items() if n.startswith("worker-")}
    for name, service in workers.items():
        env = service["environment"]
        assert env["HF_TOKEN"] == "${HF_TOKEN:-}", name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts[env["HF_HOME"]] == "hf-cache", name
        # and still the shared production environment
        assert env["GRIDSHIFT_BROKER_URL"] == "redis://redis:6379/0", name
        assert mounts["/data"] == "gridshift-data", name
    # and the image creates the cache directory for its user (a named volume copies it)
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "/hf-cache" in dockerfile


def _pins() -> dict[str, str]:
    lines = (REPO_ROOT / "deploy" / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_images_install_a_pinned_lock_covering_every_dependency() -> None:
    # Given pyproject's core dependencies and the gpu extra
    import re
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["gpu"]
    names = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    pins = _pins()

    # Then each is pinned to one exact version in deploy/constraints.txt
    assert names <= set(pins), names - set(pins)
    # and the Dockerfile installs with that file as constraints
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY deploy/constraints.txt" in dockerfile
    assert "pip install -c deploy/constraints.txt" in dockerfile


def test_vllm_server_image_matches_the_engine_release(services: dict[str, Any]) -> None:
    # Given the optional `vllm serve` services and the pinned in-process engine
    vllm_pin = _pins()["vllm"]
    for name in (n for n in services if n.startswith("vllm-")):
        image = services[name]["image"]
        # Then the server image is the same vLLM release
        assert image.endswith(f"vllm/vllm-openai:v{vllm_pin}}}"), (name, image)
        assert services[name]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"
    # and the pin satisfies the gpu extra's lower bound
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floor = next(d for d in project["optional-dependencies"]["gpu"] if d.startswith("vllm"))
    minimum = tuple(int(x) for x in floor.split(">=")[1].split(".")[:2])
    assert tuple(int(x) for x in vllm_pin.split(".")[:2]) >= minimum


@pytest.mark.slow  # starts a process
@pytest.mark.parametrize(
    ("auth", "expected"), [("", []), ("ops:s3cret", ["--basic-auth=ops:s3cret"])]
)
def test_flower_basic_auth_only_when_set(
    services: dict[str, Any], tmp_path: Path, auth: str, expected: list[str]
) -> None:
    # Given Flower's shell command as the container runs it (compose turns $$ into $), with
    # `celery` replaced by a stand-in that prints its arguments one per line
    flower = services["flower"]
    assert flower["entrypoint"] == ["sh", "-c"]
    script = flower["command"][0].replace("$$", "$").replace("exec celery", "printf '%s\\n'")
    # and no FLOWER_BASIC_AUTH in its environment (Flower would read an empty one as a user)
    assert "FLOWER_BASIC_AUTH" not in flower["environment"]

    # When the container's shell runs it with the .env value empty, then set
    result = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], "GRIDSHIFT_FLOWER_AUTH": auth},
        capture_output=True,
        text=True,
        check=True,
    )

    # Then basic auth is asked for exactly when a value was given
    args = result.stdout.split()
    assert args[:3] == ["--broker=redis://redis:6379/0", "flower", "--port=5555"]
    assert args[3:] == expected
    assert flower["environment"]["GRIDSHIFT_FLOWER_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
