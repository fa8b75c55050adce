"""The intake CLI against a real ``gridshift serve`` process: submit, batches, jobs, keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from click.testing import Result
from typer.testing import CliRunner

from scheduler.cli import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_app,
)
from scheduler.clock import SETTING, now_utc
from scheduler.config import Settings
from scheduler.domain import BatchStatus
from scheduler.store.db import make_engine, session_factory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
JOBS_DIR = REPO_ROOT / "jobs"
TICKETS_EU = JOBS_DIR / "data" / "tickets-sample-eu.jsonl"
GRIDSHIFT = str(Path(sys.executable).parent / "gridshift")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running ``gridshift serve`` and the environment its CLI calls need."""

    url: str
    env: dict[str, str]
    data_dir: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``gridshift serve`` on a free port with its own data dir (SQLite inside), and a key."""
    data_dir = tmp_path_factory.mktemp("cli-intake") / "data"
    port = _free_port()
    env = {
        # a clean gridshift configuration, but the run's clock (GRIDSHIFT_CLOCK) if it has one
        **{k: v for k, v in os.environ.items() if not k.startswith("GRIDSHIFT_") or k == SETTING},
        "GRIDSHIFT_DATA_DIR": str(data_dir),
        "GRIDSHIFT_API_URL": f"http://127.0.0.1:{port}",
    }
    log_path = data_dir.parent / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [GRIDSHIFT, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        created = subprocess.run(
            [GRIDSHIFT, "keys", "create", "--tenant", "acme"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == EXIT_OK, created.stderr
        key = created.stdout.strip()
        assert key.startswith("gs-") and "\n" not in key
        yield Server(
            url=f"http://127.0.0.1:{port}", env={**env, "GRIDSHIFT_API_KEY": key}, data_dir=data_dir
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gridshift serve exited {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"gridshift serve did not become healthy in 60 s:\n{log_path.read_text()}")


def run(server: Server, *args: str) -> Result:
    """Invoke the ``gridshift`` CLI in-process with the server's environment."""
    return CliRunner().invoke(build_app(), list(args), env=server.env, catch_exceptions=False)


def submit_json(server: Server, path: Path, *extra: str) -> dict[str, object]:
    result = run(server, "submit", str(path), "--min-quality", "0.5", "--json", *extra)
    assert result.exit_code == EXIT_OK, result.stderr
    batch: dict[str, object] = json.loads(result.stdout)
    return batch


def test_submit_uploads_and_creates_a_batch_with_gridshift_options(server: Server) -> None:
    # Given a file of 12 'auto' chat requests
    # When it is submitted with a deadline, sites, priority and metadata
    batch = submit_json(
        server,
        TICKETS_EU,
        "--deadline",
        "2099-01-01T06:00:00Z",
        "--sites",
        "de-frankfurt,es-madrid",
        "--priority",
        "2",
        "--metadata",
        "team=support",
    )

    # Then the API accepted it with every request counted and the options kept
    assert batch["status"] == BatchStatus.IN_PROGRESS
    assert batch["request_counts"] == {"total": 12, "completed": 0, "failed": 0}
    assert batch["metadata"] == {"team": "support"}
    gridshift = batch["gridshift"]
    assert isinstance(gridshift, dict)
    assert gridshift["sites"] == ["de-frankfurt", "es-madrid"]
    assert gridshift["priority"] == 2.0
    assert gridshift["deadline"] == int(datetime(2099, 1, 1, 6, tzinfo=UTC).timestamp())


def test_submit_without_json_prints_id_and_status_for_scripts(server: Server) -> None:
    # When a file is submitted without --json
    result = run(server, "submit", str(TICKETS_EU), "--min-quality", "0.5")

    # Then stdout is exactly "<id> <status>"
    assert result.exit_code == EXIT_OK, result.stderr
    batch_id, status = result.stdout.split()
    assert batch_id.startswith("batch_") and status == BatchStatus.IN_PROGRESS


def test_list_and_show_find_the_submitted_batch(server: Server) -> None:
    # Given a submitted batch
    batch_id = submit_json(server, TICKETS_EU)["id"]

    # When the batches are listed and the batch is shown
    listed = run(server, "batches", "list", "--json")
    everything = run(server, "batches", "list", "--all", "--json")
    shown = run(server, "batches", "show", str(batch_id))

    # Then it is the newest batch, and the description has its counts and gridshift's part
    assert listed.exit_code == everything.exit_code == shown.exit_code == EXIT_OK
    assert json.loads(listed.stdout)["data"][0]["id"] == batch_id
    assert batch_id in {b["id"] for b in json.loads(everything.stdout)["data"]}
    assert f"id           {batch_id}" in shown.stdout
    assert "total 12, completed 0, failed 0, pending 12" in shown.stdout
    assert "part         auto (min_quality 0.5): 12 requests" in shown.stdout
    assert "output tokens (estimated)" in shown.stdout


def test_cancel_ends_a_batch_that_has_not_started(server: Server) -> None:
    # Given a submitted batch nobody has run yet
    batch_id = str(submit_json(server, TICKETS_EU)["id"])

    # When it is cancelled, and cancelled again
    first = run(server, "batches", "cancel", batch_id)
    second = run(server, "batches", "cancel", batch_id)

    # Then it is cancelled at once; a second cancel fails: the batch has already ended
    assert first.exit_code == EXIT_OK, first.stderr
    assert first.stdout.split() == [batch_id, BatchStatus.CANCELLED]
    assert second.exit_code == EXIT_FAILED
    assert second.stderr.startswith("error: ") and "[InvalidTransition]" in second.stderr


def test_unknown_batch_exits_not_found_with_the_apis_message(server: Server) -> None:
    # When a batch that does not exist is shown
    result = run(server, "batches", "show", "batch_doesnotexist")

    # Then the exit code is 4 and stderr carries the API's message
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stderr.startswith("error: ")
    assert "batch_doesnotexist" in result.stderr


def test_wrong_key_is_a_usage_error(server: Server) -> None:
    # When the CLI sends a key the API does not know
    result = run(server, "batches", "list", "--api-key", "gs-not-a-key")

    # Then it exits 2 and says how to get a key
    assert result.exit_code == EXIT_USAGE
    assert "keys create" in result.stderr


def test_unreachable_api_exits_3(server: Server) -> None:
    # Given a port where nothing listens
    dead_url = f"http://127.0.0.1:{_free_port()}"

    # When the CLI calls it
    result = run(server, "batches", "list", "--api-url", dead_url)

    # Then it exits 3 and names the URL
    assert result.exit_code == EXIT_UNREACHABLE
    assert dead_url in result.stderr


def test_malformed_file_fails_the_batch_and_wait_exits_1(server: Server, tmp_path: Path) -> None:
    # Given a file whose second line is not JSON
    good = TICKETS_EU.read_text(encoding="utf-8").splitlines()[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n{this is not json\n", encoding="utf-8")

    # When it is submitted and waited for
    result = run(server, "submit", str(bad), "--min-quality", "0.5", "--wait", "--poll-s", "0.2")

    # Then the batch ends failed, the bad line is reported, and the exit code is 1
    assert result.exit_code == EXIT_FAILED
    assert result.stdout.split()[1] == BatchStatus.FAILED
    assert "line 2" in result.stderr
    # and the final line is printed once (stdout), not repeated on stderr
    final = result.stdout.strip().splitlines()[-1]
    assert final not in result.stderr

    # When it is submitted without --wait
    quick = run(server, "submit", str(bad), "--min-quality", "0.5")
    # Then the exit code is 1 as well: a failed batch is a failure with or without --wait
    assert quick.exit_code == EXIT_FAILED
    assert quick.stdout.split()[1] == BatchStatus.FAILED and "line 2" in quick.stderr


def test_wait_gives_up_after_timeout_with_exit_5(server: Server) -> None:
    # Given no worker runs in this test, so a valid batch stays in progress
    # When submit waits with a short timeout
    started = time.monotonic()
    result = run(
        server,
        "submit",
        str(TICKETS_EU),
        "--min-quality",
        "0.5",
        "--wait",
        "--poll-s",
        "0.2",
        "--timeout-s",
        "0.6",
    )

    # Then it gives up with exit 5 soon after the timeout, saying how to follow the batch
    assert result.exit_code == EXIT_TIMEOUT
    assert time.monotonic() - started < 10
    assert "gridshift batches show batch_" in result.stderr


def test_both_deadline_and_window_is_a_usage_error(server: Server) -> None:
    # When submit gets both ways of saying when
    result = run(
        server, "submit", str(TICKETS_EU), "--deadline", "2099-01-01T00:00:00Z", "--window", "6h"
    )

    # Then it refuses before sending anything
    assert result.exit_code == EXIT_USAGE
    assert "either --deadline or --window" in result.stderr


def test_job_dry_run_sends_nothing_and_real_submit_tags_the_batch(server: Server) -> None:
    # Given the nightly ticket-summaries job and the current number of batches
    spec = str(JOBS_DIR / "ticket-summaries.yaml")
    before = len(json.loads(run(server, "batches", "list", "--all", "--json").stdout)["data"])

    # When it is dry-run, then submitted for real
    dry = run(server, "jobs", "submit", spec, "--dry-run", "--json")
    after_dry = len(json.loads(run(server, "batches", "list", "--all", "--json").stdout)["data"])
    real = run(server, "jobs", "submit", spec, "--json")

    # Then the dry run reports the merged inputs without creating a batch
    assert dry.exit_code == EXIT_OK, dry.stderr
    summary = json.loads(dry.stdout)
    assert summary["requests"] == 24 and len(summary["inputs"]) == 2
    assert after_dry == before
    # and the real submission creates one batch of all 24 requests, tagged with the job
    assert real.exit_code == EXIT_OK, real.stderr
    batch = json.loads(real.stdout)
    assert batch["request_counts"]["total"] == 24
    assert batch["metadata"]["gridshift_job"] == "ticket-summaries"
    assert batch["gridshift"]["sites"] == ["de-frankfurt", "es-madrid"]
    deadline = datetime.fromtimestamp(batch["gridshift"]["deadline"], UTC)
    assert (deadline.hour, deadline.minute) == (6, 0)


def test_download_writes_the_error_file_of_an_expired_batch(server: Server, tmp_path: Path) -> None:
    # Given a batch that expired before anything ran (finalized as the dispatcher would)
    from scheduler.dispatch.finalize import finalize_batch

    batch_id = str(submit_json(server, TICKETS_EU)["id"])
    before = run(server, "batches", "download", batch_id, "--output", str(tmp_path / "o.jsonl"))
    settings = Settings(data_dir=server.data_dir)
    engine = make_engine(settings.resolved_database_url)
    try:
        assert finalize_batch(
            session_factory(engine), settings, batch_id, BatchStatus.EXPIRED, now=now_utc()
        )
    finally:
        engine.dispose()

    # When its files are downloaded
    errors_path = tmp_path / "errors.jsonl"
    result = run(
        server,
        "batches",
        "download",
        batch_id,
        "--output",
        str(tmp_path / "o.jsonl"),
        "--errors",
        str(errors_path),
    )

    # Then before finishing there was nothing to download (exit 1), and now the error file
    # holds one line per request, each saying it expired
    assert before.exit_code == EXIT_FAILED
    assert "no output or error file yet" in before.stderr
    assert result.exit_code == EXIT_OK, result.stderr
    lines = [json.loads(x) for x in errors_path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 12
    assert {line["error"]["code"] for line in lines} == {"batch_expired"}
    assert not (tmp_path / "o.jsonl").exists()  # nothing succeeded, so no output file
    # and list and show count its requests as failed, as request_counts does, never as done
    listed = run(server, "batches", "list", "--all")
    row = next(x for x in listed.stdout.splitlines() if x.startswith(batch_id))
    assert row.split()[1] == "expired" and "0/12 completed, 12 failed" in row
    shown = run(server, "batches", "show", batch_id)
    assert "total 12, completed 0, failed 12" in shown.stdout


def test_option_the_api_refuses_is_a_usage_error_with_its_message(server: Server) -> None:
    # When a batch names a site the fleet does not have
    result = run(server, "submit", str(TICKETS_EU), "--min-quality", "0.5", "--sites", "mars-base")

    # Then the API's refusal (400) becomes exit 2 with its message on stderr
    assert result.exit_code == EXIT_USAGE
    assert "mars-base" in result.stderr


def test_job_dry_run_refuses_what_the_server_would_refuse_and_accepts_embeddings(
    server: Server, tmp_path: Path
) -> None:
    # Given the weekly embeddings job (lines name the hosted text-embedding-3-small)
    spec = str(JOBS_DIR / "doc-embeddings.yaml")
    # When it is dry-run and submitted, Then both accept it: 24 requests on the alias
    dry = run(server, "jobs", "submit", spec, "--dry-run", "--json")
    assert dry.exit_code == EXIT_OK, dry.stderr
    assert json.loads(dry.stdout)["requests"] == 24
    real = run(server, "jobs", "submit", spec, "--json")
    assert real.exit_code == EXIT_OK, real.stderr
    assert json.loads(real.stdout)["status"] in ("validating", "in_progress")
    # Given a job whose embeddings lines carry an option no engine honours
    bad_input = tmp_path / "bad.jsonl"
    body = {"model": "tiny-embed", "input": "x", "truncate": "END"}
    line = {"custom_id": "d1", "method": "POST", "url": "/v1/embeddings", "body": body}
    bad_input.write_text(json.dumps(line) + "\n")
    bad = tmp_path / "bad-embeddings.yaml"
    bad.write_text(
        "name: bad-embeddings\ninput: bad.jsonl\nendpoint: /v1/embeddings\nmodel: tiny-embed\n"
    )
    # When it is dry-run, Then it fails the way the server would, naming the line and field
    result = run(server, "jobs", "submit", str(bad), "--dry-run")
    assert result.exit_code != EXIT_OK
    assert "line 1" in result.stderr and "'truncate' is not supported" in result.stderr
