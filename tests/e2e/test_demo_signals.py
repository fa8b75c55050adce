"""``gridshift demo`` replays a night that shows the product, in the data dir's own store.

One demo run (about 20 s) feeds every assertion: the signals it planned on are cached for every
sample site, the plan moves work away from the submission hour and beats both baselines, and
``gridshift schedule`` and ``gridshift report`` then read the same store with no flag.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from demo_run import DemoRun
from sqlalchemy import select
from typer.testing import CliRunner

from scheduler.cli import EXIT_OK, EXIT_USAGE, build_app
from scheduler.review.signals import site_signals
from scheduler.review.units import si
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import AssignmentRecord, Batch, LedgerEntry, PlanRecord, now_utc


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_plan_moves_work_and_beats_both_baselines(
    demo_run: DemoRun,
) -> None:
    # Given the demo ran in a fresh data dir
    data, code, lines = demo_run.data_dir, demo_run.code, demo_run.lines
    assert code == 0, "\n".join(lines)
    sessions = session_factory(make_engine(f"sqlite:///{data / 'gridshift.db'}"))
    with sessions() as s:
        plan = s.scalars(select(PlanRecord)).one()
        rows = s.scalars(select(AssignmentRecord)).all()
        batches = s.scalars(select(Batch)).all()
        ledger = s.scalars(select(LedgerEntry)).all()
    # Then the plan saves CO2 against asap and carbon_greedy, and the demo prints the margins
    # (strictly below asap; never above carbon_greedy, which ties the plan on the nights when
    # sending each batch to its cleanest option in turn happens to be optimal: the synthetic
    # night's shapes depend on the date, and on some dates it does)
    assert plan.totals["co2_g"] < plan.baselines["asap"]["co2_g"]
    assert plan.totals["co2_g"] <= plan.baselines["carbon_greedy"]["co2_g"] * (1 + 1e-9)
    for name in ("asap", "carbon_greedy"):
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
    assert {b.request_failed for b in batches} == {0}  # every input fits the tiny model's context
    assert max(r.ended_at for r in ledger) <= now_utc()
    assert {(r.site, r.started_at.replace(minute=0, second=0, microsecond=0)) for r in ledger} <= {
        (a.site, a.slot_start) for a in rows
    }
    # and the demo prints realised savings on the night's actuals (booked against the same work
    # run at once), their total matching the ledger's booked CO2, with the planned benefit
    # beside it, labelled as the plan's estimate
    total = next(line for line in lines if line.startswith("  realised "))
    assert "%" in total and "by time at the site it ran" in total
    booked_g = sum(r.co2_location_g + r.embodied_co2_g for r in ledger)
    assert total.split()[1:3] == si(booked_g, "g").split()
    assert any(
        "planned benefit (the plan's ESTIMATE" in line and "vs asap" in line for line in lines
    )
    # and the realised savings are split: by place and time, and by model choice (the auto job
    # ran the smaller model where asap would have run the larger one at once)
    assert any(line.startswith("  by place and time: ") and "%" in line for line in lines)
    model_line = next(line for line in lines if line.startswith("  by model choice: "))
    assert "tiny-chat-mini instead of asap's tiny-chat" in model_line and "%" in model_line
    # and the printed figures carry units, no Python reprs
    text = "\n".join(lines)
    assert "None" not in text and "e-0" not in text


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_caches_the_signals_it_planned_on_for_all_three_sample_sites(
    demo_run: DemoRun,
) -> None:
    data = demo_run.data_dir
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
    demo_run: DemoRun,
) -> None:
    # Given the demo's data dir as the only setting (what `make demo` then `gridshift ...` does)
    data = demo_run.data_dir
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


@pytest.mark.e2e
@pytest.mark.slow
def test_explanations_and_workers_of_the_demo_night(demo_run: DemoRun) -> None:
    from fastapi.testclient import TestClient

    from scheduler.api.app import create_app
    from scheduler.config import Settings
    from scheduler.store.tenants import create_api_key

    # Given the demo's store served by the real app, an admin and a plain key of its tenant
    settings = Settings(data_dir=demo_run.data_dir, database_url="")
    sessions = session_factory(make_engine(demo_run.url))
    with sessions() as s, s.begin():
        admin = create_api_key(s, "demo", admin=True)
        plain = create_api_key(s, "demo")
        jobs = {b.metadata_["gridshift_job"]: b.id for b in s.scalars(select(Batch)).all()}
        plan = s.scalars(select(PlanRecord)).one()
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {admin}"}
        night = {"start": plan.horizon_start.isoformat(), "end": plan.horizon_end.isoformat()}
        accuracy = client.get("/v1/forecasts/accuracy", params=night, headers=auth)
        why = {
            job: client.get(f"/v1/batches/{batch_id}/explain", headers=auth).json()
            for job, batch_id in jobs.items()
        }
        workers = client.get("/v1/workers", headers=auth)
        refused = client.get("/v1/workers", headers={"Authorization": f"Bearer {plain}"})
    # Then the Forecasts view shows the plan's forecast against the night's actuals, every site,
    # off by the seeded synthetic error (small, not nil: demo_night.forecast_of)
    assert accuracy.status_code == 200, accuracy.text
    sites = {x["site"]: x for x in accuracy.json()["sites"]}
    assert sorted(sites) == sorted(s.name for s in load_sample_fleet().sites)
    for x in sites.values():  # the replayed night (20 h) at least; no actual in the future
        assert len(x["points"]) >= 20
        assert max(datetime.fromisoformat(p["time"]) for p in x["points"]) < now_utc()
        assert any(p["forecast"] != p["actual"] for p in x["points"])
        assert 0 < x["mape_pct"] < 15
    # and the EU-only job is limited by residency (London's windy night was cleaner)
    tickets = why["ticket-summaries"]
    assert tickets["limited_by"] == "residency" and "gb-london" in tickets["because"]
    # and each chosen cell shows the CO2 the plan priced for the batch there, not the batch's
    # whole energy at that intensity
    with sessions() as s:
        for job, batch_id in jobs.items():
            planned = math.fsum(
                a.co2_g
                for a in s.scalars(
                    select(AssignmentRecord).where(
                        AssignmentRecord.batch_id == batch_id,
                        AssignmentRecord.plan_id == plan.id,
                    )
                )
            )
            shown = math.fsum(o["co2_g"] for o in why[job]["chosen"])
            assert shown == pytest.approx(planned, rel=1e-9), job
    # and the backlog ran where its site's own solar covers it, beside running at once
    backlog = why["backlog-classify"]
    assert backlog["net_of_solar_g_per_kwh"] < backlog["got_g_per_kwh"]
    assert backlog["got_g_per_kwh"] < backlog["at_once_here_g_per_kwh"]
    # and every explanation names a next-best option with its CO2
    assert all(w["next_best"] and w["next_best"]["co2_g"] > 0 for w in why.values())
    # and the workers view lists the three pools and the worker that ran the shards
    assert workers.status_code == 200 and refused.status_code == 403
    view = workers.json()
    assert len(view["pools"]) == 3
    assert sum(w["attempts_done"] for w in view["workers"]) == sum(
        p["shards"].get("done", 0) for p in view["pools"]
    )
