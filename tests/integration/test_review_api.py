"""Operations review endpoints over HTTP (TestClient) on a seeded store: shapes and tenant scoping."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from clock_pin import pinned_clock
from conftest import PG_ADMIN_URL, unavailable
from fastapi.testclient import TestClient
from review_seed import Seeded, seed_review_store
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.review.reports import CODECARBON_COLUMNS
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    ForecastPoint,
    LedgerEntry,
    PlanRecord,
    Shard,
)

pytestmark = pytest.mark.integration


@dataclass
class Store:
    client: TestClient
    seeded: Seeded
    sessions: sessionmaker[Session]

    def get(self, path: str, key: str | None = None, **params: str) -> dict:  # type: ignore[type-arg]
        r = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {key or self.seeded.admin_key}"}
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _pg_database() -> Iterator[str]:
    import psycopg

    name = f"gridshift_review_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({e})")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A migrated store seeded with a real plan, shards and ledger, served by the app."""
    tmp: Path = tmp_path_factory.mktemp("review")
    pg = _pg_database() if request.param == "postgresql" else None
    url = next(pg) if pg else f"sqlite:///{tmp / 'gs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with pinned_clock() as now:  # the seed and every request of the module on one clock
        seeded = seed_review_store(sessions, now=now)
        app = create_app(Settings(data_dir=tmp / "data", database_url=url))
        with TestClient(app) as client:
            yield Store(client, seeded, sessions)
    engine.dispose()
    if pg:
        next(pg, None)


def _tenant_batches(store: Store, tenant: str) -> set[str]:
    return {b for b, t in store.seeded.batch_tenant.items() if t == tenant}


def test_schedule_has_one_bar_per_shard_and_per_uncut_assignment(store: Store) -> None:
    # Given the seeded store with shards and assignments not yet cut
    # When an admin asks for the schedule over the whole horizon
    s = store.get("/v1/schedule", **{"from": "2000-01-01T00:00:00Z", "to": "2000-02-01T00:00:00Z"})
    assert s["bars"] == []
    now = store.seeded.now
    data = store.get(
        "/v1/schedule",
        **{
            "from": (now.replace(minute=0) - pd.Timedelta(hours=20)).isoformat(),
            "to": (now + pd.Timedelta(hours=30)).isoformat(),
        },
    )
    # Then every shard has exactly one bar and every uncut assignment one planned bar
    shard_bars = [b for b in data["bars"] if b["kind"] == "shard"]
    assert sorted(b["id"] for b in shard_bars) == sorted(store.seeded.shard_ids)
    planned = [b for b in data["bars"] if b["kind"] == "assignment"]
    assert sorted(int(b["id"][1:]) for b in planned) == sorted(store.seeded.uncut_assignment_ids)
    assert {b["status"] for b in planned} == {"planned"}
    assert {"done", "failed", "running", "queued", "planned"} <= {b["status"] for b in shard_bars}
    # and each site with work, and every site of the served fleet, has its signals on the axis
    assert {b["site"] for b in data["bars"]} <= {sig["site"] for sig in data["signals"]}
    assert {"gb-london", "de-frankfurt", "es-madrid"} <= {sig["site"] for sig in data["signals"]}
    assert all(
        p["carbon_g_per_kwh"] is not None and p["price_per_kwh"] is not None
        for sig in data["signals"]
        for p in sig["points"]
    )
    assert data["slot_minutes"] == 60 and data["plan_id"] == store.seeded.plan_id


def test_tenant_key_sees_only_its_own_work(store: Store) -> None:
    # Given a tenant key of acme
    key = store.seeded.keys["acme"]
    mine = _tenant_batches(store, "acme")
    now = store.seeded.now
    rng = {
        "from": (now - pd.Timedelta(hours=20)).isoformat(),
        "to": (now + pd.Timedelta(hours=30)).isoformat(),
    }
    # When it reads the schedule, the plan, the ledger, savings and reports
    bars = store.get("/v1/schedule", key, **rng)["bars"]
    plan = store.get("/v1/plans/current", key)
    ledger = store.get("/v1/ledger", key)["data"]
    savings = store.get("/v1/savings", key)
    report = store.get("/v1/reports/emissions", key, format="json")
    # Then only acme's batches appear, and all of them
    with store.sessions() as s:
        acme_id = store.seeded.tenant_ids["acme"]
        expected_shards = set(
            s.scalars(
                select(Shard.id)
                .join(Batch, Batch.id == Shard.batch_id)
                .where(Batch.tenant_id == acme_id)
            ).all()
        )
        expected_ledger = set(
            s.scalars(select(LedgerEntry.id).where(LedgerEntry.tenant_id == acme_id)).all()
        )
    assert {b["batch_id"] for b in bars} <= mine and {
        b["id"] for b in bars if b["kind"] == "shard"
    } == expected_shards
    assert {a["batch_id"] for a in plan["assignments"]} <= mine
    assert {r["id"] for r in ledger} == expected_ledger and expected_ledger
    assert {r["key"] for r in savings["per_batch"]} <= mine and savings["plans"] == []
    assert {r["tenant_id"] for r in report["rows"]} == {acme_id}
    # and the admin sees more than the tenant
    assert len(store.get("/v1/ledger")["data"]) > len(ledger)


def test_batch_review_of_another_tenants_batch_is_not_found(store: Store) -> None:
    other = next(iter(_tenant_batches(store, "globex")))
    r = store.client.get(
        f"/v1/batches/{other}/review",
        headers={"Authorization": f"Bearer {store.seeded.keys['acme']}"},
    )
    assert r.status_code == 404
    assert "no batch" in r.json()["error"]["message"]


def test_requests_without_a_key_are_refused(store: Store) -> None:
    for path in ("/v1/schedule", "/v1/ledger", "/v1/budget", "/v1/reports/emissions"):
        assert store.client.get(path).status_code == 401


def test_batch_review_compares_what_ran_with_running_at_once(store: Store) -> None:
    # Given a batch that ran (ledger rows) at several shards
    with store.sessions() as s:
        bid = s.scalars(select(LedgerEntry.batch_id).order_by(LedgerEntry.id)).first()
        rows = s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == bid)).all()
        shards = s.scalars(select(Shard.id).where(Shard.batch_id == bid)).all()
    # When its owner asks for the review
    owner = store.seeded.batch_tenant[bid]
    r = store.get(f"/v1/batches/{bid}/review", store.seeded.keys[owner])
    # Then every shard is listed, the actuals are the ledger's sums, and the reason names both intensities
    assert sorted(x["shard_id"] for x in r["shards"]) == sorted(shards)
    assert r["actual"]["energy_kwh"] == pytest.approx(
        math.fsum(x.facility_energy_kwh for x in rows)
    )
    assert r["actual"]["co2_g"] == pytest.approx(
        math.fsum(x.co2_location_g + x.embodied_co2_g for x in rows)
    )
    assert r["asap_counterfactual"]["energy_kwh"] == pytest.approx(r["actual"]["energy_kwh"])
    assert all(x["asap_carbon_g_per_kwh"] is not None for x in r["shards"])
    assert "gCO2/kWh" in r["reason"] and "submission" in r["reason"]
    # and estimates are labelled as such
    assert r["estimated"] == any(x.energy_method == "estimated" for x in rows)
    for x in r["shards"]:
        if x["energy_method"] == "estimated":
            assert x["estimated"] is True


def test_savings_carry_the_caveat_and_the_plans_baselines(store: Store) -> None:
    data = store.get("/v1/savings")
    assert "location-based" in data["caveat"]
    with store.sessions() as s:
        co2 = math.fsum(
            r.co2_location_g + r.embodied_co2_g for r in s.scalars(select(LedgerEntry)).all()
        )
    assert math.fsum(d["actual"]["co2_g"] for d in data["per_day"]) == pytest.approx(co2)
    assert math.fsum(b["actual"]["co2_g"] for b in data["per_batch"]) == pytest.approx(co2)
    current = next(p for p in data["plans"] if p["plan_id"] == store.seeded.plan_id)
    assert current["asap"] is not None and current["carbon_greedy"] is not None
    assert current["saved_co2_g_vs_asap"] == pytest.approx(
        current["asap"]["co2_g"] - current["planned"]["co2_g"]
    )


def test_budget_reports_use_left_and_the_pacing_price(store: Store) -> None:
    data = store.get("/v1/budget")
    today = data["today"]
    assert today["budget_g"] == 6000.0 and data["pacing_price_per_g"] == pytest.approx(0.0004)
    assert today["left_g"] == pytest.approx(6000.0 - today["used_g"])
    assert data["state"] in ("normal", "tightening", "restricted", "critical")


def test_forecast_accuracy_reports_mae_and_mape_per_site(store: Store) -> None:
    data = store.get("/v1/forecasts/accuracy", site="de-frankfurt")
    assert [s["site"] for s in data["sites"]] == ["de-frankfurt"]
    site = data["sites"][0]
    with store.sessions() as s:
        pts = s.scalars(
            select(ForecastPoint).where(
                ForecastPoint.key.like("de-frankfurt|%"), ForecastPoint.signal == "carbon"
            )
        ).all()
    fc = {p.time: p.value for p in pts if p.kind == "forecast"}
    act = {p.time: p.value for p in pts if p.kind == "actual"}
    errors = [abs(fc[t] - act[t]) for t in act if t in fc and t >= pd.Timestamp(data["start"])]
    assert len(site["points"]) == len(errors) > 0
    assert site["mae_g_per_kwh"] == pytest.approx(sum(errors) / len(errors))
    assert site["mape_pct"] > 0


def test_emissions_csv_over_http_matches_the_ledger(store: Store) -> None:
    r = store.client.get(
        "/v1/reports/emissions",
        params={"format": "csv"},
        headers={"Authorization": f"Bearer {store.seeded.admin_key}"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    df = pd.read_csv(io.StringIO(r.text))
    assert tuple(df.columns[: len(CODECARBON_COLUMNS)]) == CODECARBON_COLUMNS
    with store.sessions() as s:
        rows = s.scalars(select(LedgerEntry)).all()
    assert len(df) == len(rows)
    assert math.fsum(df["co2_location_g"]) == math.fsum(x.co2_location_g for x in rows)
    assert set(df["gpu_model"]) <= {"H100", "A100", "h100", "a100"}


def test_plans_list_versions_with_the_current_one_flagged(store: Store) -> None:
    data = store.get("/v1/plans")
    assert data["count"] == 2 and [p["is_current"] for p in data["data"]] == [True, False]
    current = store.get("/v1/plans/current")
    with store.sessions() as s:
        n = len(
            s.scalars(
                select(AssignmentRecord.id).where(AssignmentRecord.plan_id == store.seeded.plan_id)
            ).all()
        )
    assert len(current["assignments"]) == n == current["plan"]["assignment_count"]
    assert all(
        a["carbon_g_per_kwh"] is not None and a["price_per_kwh"] is not None
        for a in current["assignments"]
    )
    # and the price and solar shown are those the plan used (its assignment record), not the
    # cache's first point of the slot
    first = current["assignments"][0]
    with store.sessions() as s, s.begin():
        rec = s.get(AssignmentRecord, first["id"])
        assert rec is not None
        saved = (rec.price_per_kwh, rec.renewable_kw)
        rec.price_per_kwh, rec.renewable_kw = 0.4242, 0.0123
    try:
        again = {a["id"]: a for a in store.get("/v1/plans/current")["assignments"]}
        assert (again[first["id"]]["price_per_kwh"], again[first["id"]]["renewable_kw"]) == (
            0.4242,
            0.0123,
        )
    finally:
        with store.sessions() as s, s.begin():
            rec = s.get(AssignmentRecord, first["id"])
            assert rec is not None
            rec.price_per_kwh, rec.renewable_kw = saved


def test_metrics_expose_queue_depth_states_and_ledger_totals(store: Store) -> None:
    text = store.client.get("/metrics").text
    with store.sessions() as s:
        queued = s.scalars(select(Shard).where(Shard.status == "queued")).all()
        kwh = math.fsum(r.facility_energy_kwh for r in s.scalars(select(LedgerEntry)).all())
    depth = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gridshift_queue_depth{")
    )
    assert depth == len(queued)
    assert f'gridshift_shards{{status="queued"}} {float(len(queued))}' in text
    booked = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gridshift_energy_joules_total{")
    )
    assert booked == pytest.approx(kwh * 3.6e6)
    assert 'gridshift_co2_grams_total{kind="market",site="gb-london"}' in text
    # and shard durations and planner solve times are histograms in seconds (PostgreSQL here)
    with store.sessions() as s:
        n_ledger = len(s.scalars(select(LedgerEntry)).all())
        n_plans = len(s.scalars(select(PlanRecord)).all())
    assert f"gridshift_shard_duration_seconds_count {float(n_ledger)}" in text
    assert f"gridshift_planner_solve_seconds_count {float(n_plans)}" in text


def test_openapi_documents_every_review_endpoint_with_a_response_model(store: Store) -> None:
    paths = store.client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/plans",
        "/v1/plans/current",
        "/v1/schedule",
        "/v1/batches/{batch_id}/review",
        "/v1/savings",
        "/v1/budget",
        "/v1/forecasts/accuracy",
        "/v1/ledger",
    ):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema, path
    assert "text/csv" in paths["/v1/reports/emissions"]["get"]["responses"]["200"]["content"]
