"""``gridshift demo`` replays a night that shows the product, in the data dir's own store.

One demo run (about 20 s) feeds every assertion: the signals it planned on are cached for every
sample site, the plan moves work away from the submission hour and beats both baselines, and
``gridshift schedule`` and ``gridshift report`` then read the same store with no flag.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from scheduler.cli import EXIT_OK, EXIT_USAGE, build_app
from scheduler.config import Settings
from scheduler.review.signals import site_signals
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import AssignmentRecord, Batch, LedgerEntry, PlanRecord, now_utc
from workers.demo import run_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[str]]:
    """Run the demo once, offline, into a fresh data dir."""
    data = tmp_path_factory.mktemp("demo") / "data"
    lines: list[str] = []
    code = run_demo(Settings(data_dir=data, database_url=""), echo=lines.append)
    return data, code, lines


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_plan_moves_work_and_beats_both_baselines(
    demo_run: tuple[Path, int, list[str]],
) -> None:
    # Given the demo ran in a fresh data dir
    data, code, lines = demo_run
    assert code == 0, "\n".join(lines)
    sessions = session_factory(make_engine(f"sqlite:///{data / 'gridshift.db'}"))
    with sessions() as s:
        plan = s.scalars(select(PlanRecord)).one()
        rows = s.scalars(select(AssignmentRecord)).all()
        batches = s.scalars(select(Batch)).all()
        ledger = s.scalars(select(LedgerEntry)).all()
    # Then the plan saves CO2 against asap and carbon_greedy, and the demo prints the margins
    for name in ("asap", "carbon_greedy"):
        assert plan.totals["co2_g"] < plan.baselines[name]["co2_g"], name
        assert any(line.lstrip().startswith(name) and "%" in line for line in lines)
    # and every request was moved away from the 18:00 submission hour, to more than one site
    submitted = min(b.created_at for b in batches)
    assert all(a.slot_start - plan.horizon_start >= timedelta(hours=1) for a in rows)
    assert len({a.site for a in rows}) >= 2
    # and the auto job runs on the smaller model that meets its floor (asap takes the larger)
    # (and the weekly embeddings job, whose lines name a hosted model, runs on the embedding one)
    assert {a.model for a in rows} == {"tiny-chat", "tiny-chat-mini", "tiny-embed"}
    # and the whole night is in the past, all completed, booked at its planned slots
    assert submitted < int(now_utc().timestamp())
    assert {b.status for b in batches} == {"completed"}
    assert max(r.ended_at for r in ledger) <= now_utc()
    assert {(r.site, r.started_at.replace(minute=0, second=0, microsecond=0)) for r in ledger} <= {
        (a.site, a.slot_start) for a in rows
    }
    # and the printed figures carry units, no Python reprs
    text = "\n".join(lines)
    assert "None" not in text and "e-0" not in text


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_caches_the_signals_it_planned_on_for_all_three_sample_sites(
    demo_run: tuple[Path, int, list[str]],
) -> None:
    data, code, _lines = demo_run
    sessions = session_factory(make_engine(f"sqlite:///{data / 'gridshift.db'}"))
    sites = [s.name for s in load_sample_fleet().sites]
    with sessions() as s:
        plan = s.scalars(select(PlanRecord)).one()
        series = site_signals(s, sites, plan.horizon_start, plan.horizon_end)
    assert sorted(x.site for x in series) == sorted(sites)
    hours = (plan.horizon_end - plan.horizon_start) / timedelta(hours=1)
    for x in series:
        assert x.source != "booked"
        assert len(x.points) == pytest.approx(hours, abs=1)
        assert all(p.carbon_g_per_kwh is not None and p.carbon_g_per_kwh > 0 for p in x.points)
        assert all(p.price_per_kwh is not None for p in x.points)
        assert all(p.renewable_kw is not None and p.renewable_kw >= 0 for p in x.points)
    solar = {x.site: max(p.renewable_kw or 0.0 for p in x.points) for x in series}
    assert solar["es-madrid"] > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_schedule_and_report_read_the_demo_store_with_no_flag(
    demo_run: tuple[Path, int, list[str]],
) -> None:
    # Given the demo's data dir as the only setting (what `make demo` then `gridshift ...` does)
    data, _code, _lines = demo_run
    env = {"GRIDSHIFT_DATA_DIR": str(data), "GRIDSHIFT_DATABASE_URL": "", "COLUMNS": "100"}
    runner = CliRunner()
    # When the schedule and the default report are asked for
    schedule = runner.invoke(build_app(), ["schedule"], env=env)
    report = runner.invoke(build_app(), ["report"], env=env)
    # Then both read the demo's night: its plan, and one CSV row per booked shard
    assert schedule.exit_code == EXIT_OK, schedule.output
    assert "plan #1" in schedule.stdout and "es-madrid" in schedule.stdout
    assert max(len(line) for line in schedule.stdout.splitlines()) <= 100
    assert report.exit_code == EXIT_OK, report.output
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    with session_factory(make_engine(f"sqlite:///{data / 'gridshift.db'}"))() as s:
        assert len(rows) == len(s.scalars(select(LedgerEntry)).all()) > 0


def test_a_read_of_a_missing_store_fails_with_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    # Given a data dir with no store
    env = {"GRIDSHIFT_DATA_DIR": str(tmp_path / "none"), "GRIDSHIFT_DATABASE_URL": ""}
    runner = CliRunner()
    for argv in (["schedule"], ["report"], ["keys", "create", "--tenant", "t"]):
        # When a command reads it
        result = runner.invoke(build_app(), argv, env=env)
        # Then it exits 2, says how to make a store, and leaves no empty database behind
        assert result.exit_code == EXIT_USAGE, (argv, result.output)
        assert "gridshift demo" in result.stderr and "gridshift db upgrade" in result.stderr
        assert not (tmp_path / "none" / "gridshift.db").exists()
