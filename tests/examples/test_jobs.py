"""Every job spec in ``jobs/`` loads, its inputs build a valid batch file, and its models exist."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.fleet import load_fleet
from scheduler.jobs import (
    AUTO_MODEL,
    build_batch_file,
    check_against_fleet,
    create_options,
    load_job,
)

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"
SAMPLE_FLEET = Path(__file__).resolve().parents[2] / "scheduler" / "samples" / "fleet.yaml"
SPECS = sorted(JOBS_DIR.glob("*.yaml")) + sorted(JOBS_DIR.glob("*.yml"))


def test_jobs_directory_holds_at_least_two_specs() -> None:
    # Given the jobs directory / Then it has the nightly examples the docs promise
    assert len(SPECS) >= 2, f"expected job specs in {JOBS_DIR}"


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.name)
def test_job_spec_builds_a_valid_batch_file(spec_path: Path) -> None:
    # Given a job spec from jobs/
    spec = load_job(spec_path)

    # When its inputs are merged into one batch file
    batch_file = build_batch_file(spec, spec_path.parent)

    # Then every line is a request for the job's endpoint and model, with unique custom_ids
    lines = [json.loads(raw) for raw in batch_file.content.splitlines()]
    assert len(lines) == batch_file.requests > 0
    assert len({line["custom_id"] for line in lines}) == len(lines)
    assert {line["url"] for line in lines} == {spec.endpoint}
    assert {line["body"]["model"] for line in lines} == {spec.line_model}
    # small outputs keep the demo fast on a tiny CPU model (embeddings have no output)
    if spec.endpoint != "/v1/embeddings":
        assert all(0 < line["body"]["max_tokens"] <= 32 for line in lines)
    assert spec.name == spec_path.stem


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.name)
def test_job_spec_create_options_have_a_future_deadline_or_window(spec_path: Path) -> None:
    # Given a job spec and a submission time
    spec = load_job(spec_path)
    now = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)

    # When the create-body options are built
    options = create_options(spec, now)

    # Then the batch gets either a window or a deadline after now, and is tagged with the job
    assert options["completion_window"].endswith("h")
    if "deadline" in options:
        assert datetime.fromisoformat(options["deadline"].replace("Z", "+00:00")) > now
    assert options["metadata"]["gridshift_job"] == spec.name


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.name)
def test_job_spec_models_and_sites_exist_in_the_sample_fleet(spec_path: Path) -> None:
    # Given the sample fleet the demo runs on
    fleet = load_fleet(SAMPLE_FLEET)
    spec = load_job(spec_path)
    qualities = {m.name: m.quality for m in fleet.models}

    # Then a named model exists, an 'auto' job has a model good enough, and the sites exist
    if spec.line_model == AUTO_MODEL:
        assert spec.min_quality is not None
        assert any(q >= spec.min_quality for q in qualities.values())
    else:
        assert spec.line_model in qualities or spec.line_model in fleet.model_aliases
    site_names = {s.name for s in fleet.sites}
    assert set(spec.sites or ()) <= site_names
    # And the server's own validation (what `jobs submit --dry-run` runs too) accepts it
    check_against_fleet(spec, build_batch_file(spec, spec_path.parent), fleet)
