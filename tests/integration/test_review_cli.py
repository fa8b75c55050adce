"""``gridshift schedule`` and ``gridshift report`` read the store directly (no server)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from review_seed import Seeded, seed_review_store
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from scheduler.cli import EXIT_NOT_FOUND, EXIT_USAGE, build_app
from scheduler.config import Settings
from scheduler.store.tables import AssignmentRecord, LedgerEntry

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    pinned_now: datetime,
) -> Seeded:
    monkeypatch.setenv("GRIDSHIFT_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("GRIDSHIFT_DATA_DIR", str(settings.data_dir))
    return seed_review_store(sessions, now=pinned_now)


def test_report_csv_written_to_a_file_holds_every_ledger_row(
    seeded: Seeded, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Given a store with ledger rows and no server
    out = tmp_path / "emissions.csv"
    # When the report is written as CSV for the last two days
    start = (seeded.now.replace(minute=0) - pd.Timedelta(days=2)).isoformat()
    result = CliRunner().invoke(
        build_app(), ["report", "--format", "csv", "--from", start, "--output", str(out)]
    )
    # Then the file holds one row per ledger entry with the same sums
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    with sessions() as s:
        rows = s.scalars(select(LedgerEntry)).all()
    assert len(df) == len(rows) > 0
    assert math.fsum(df["co2_location_g"]) == math.fsum(r.co2_location_g for r in rows)


def test_report_for_one_tenant_is_scoped_and_esrs_goes_to_stdout(
    seeded: Seeded, sessions: sessionmaker[Session]
) -> None:
    # When the ESRS summary of acme is printed
    result = CliRunner().invoke(build_app(), ["report", "--format", "esrs", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    # Then it sums only acme's rows, in tCO2e
    with sessions() as s:
        rows = s.scalars(
            select(LedgerEntry).where(LedgerEntry.tenant_id == seeded.tenant_ids["acme"])
        ).all()
    assert body["ledger_rows"] == len(rows) > 0
    assert (
        body["E1-6"]["gross_scope_2_location_based_tco2e"]
        == math.fsum(r.co2_location_g for r in rows) / 1e6
    )


def test_report_refuses_bad_times_and_unknown_tenants(seeded: Seeded) -> None:
    bad = CliRunner().invoke(build_app(), ["report", "--from", "yesterday"])
    assert bad.exit_code == EXIT_USAGE and "ISO-8601" in bad.output
    unknown = CliRunner().invoke(build_app(), ["report", "--tenant", "nobody"])
    assert unknown.exit_code == EXIT_NOT_FOUND and "no tenant" in unknown.output


def test_schedule_prints_every_pool_with_its_slots_and_signals(
    seeded: Seeded, sessions: sessionmaker[Session]
) -> None:
    # When the current plan is printed
    result = CliRunner().invoke(build_app(), ["schedule"])
    # Then every pool of the plan has a table and the header names the plan
    assert result.exit_code == 0, result.output
    with sessions() as s:
        lanes = {
            f"{a.site}/{a.pool}"
            for a in s.scalars(
                select(AssignmentRecord).where(AssignmentRecord.plan_id == seeded.plan_id)
            )
        }
    assert f"plan #{seeded.plan_id}" in result.output
    for lane in lanes:
        assert lane in result.output
    assert "g/kWh" in result.output and "price" in result.output
    # and it fits an 80-column terminal (figures with SI prefixes, no 160-column table)
    assert max(len(line.rstrip()) for line in result.output.splitlines()) <= 80
    # and --json gives the same assignments as data
    data = json.loads(CliRunner().invoke(build_app(), ["schedule", "--json"]).stdout)
    assert {f"{a['site']}/{a['pool']}" for a in data["assignments"]} == lanes
