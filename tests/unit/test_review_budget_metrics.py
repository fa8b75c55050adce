"""Carbon budget view (states, tenant budgets, pacer) and the store-backed Prometheus collector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.domain import CarbonBudget, Fleet
from scheduler.review.budget_view import budget_view
from scheduler.review.metrics import make_registry
from scheduler.store.tables import CarbonPacing, LedgerEntry, Tenant

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)


def _entry(
    i: int, tenant: str, started: datetime, co2_g: float, embodied_g: float = 0.0, **kw: object
) -> LedgerEntry:
    values: dict[str, object] = dict(
        batch_id="b",
        shard_id=f"s{i}",
        attempt=1,
        tenant_id=tenant,
        site="de-frankfurt",
        pool="h100",
        model="m",
        started_at=started,
        ended_at=started + timedelta(minutes=10),
        requests_done=5,
        requests_failed=1,
        input_tokens=0,
        output_tokens=0,
        gpu_hours=0.1,
        it_energy_kwh=0.05,
        facility_energy_kwh=0.06,
        energy_method="estimated",
        renewable_share=0.0,
        grid_kwh=0.06,
        carbon_g_per_kwh=300.0,
        carbon_source="forecast",
        co2_location_g=co2_g,
        co2_market_g=None,
        embodied_co2_g=embodied_g,
        water_onsite_l=0.0,
        water_offsite_l=0.0,
        cost=0.0,
        planned_energy_kwh=None,
        planned_co2_g=None,
        planned_water_l=None,
        planned_cost=None,
        created_at=started,
    )
    values.update(kw)
    return LedgerEntry(**values)


def _fleet(**budgets: CarbonBudget) -> Fleet:
    return Fleet(
        slot_minutes=60,
        sites=(),
        models=(),
        carbon_budget=CarbonBudget(g_per_day=1000.0, g_per_month=10000.0),
        tenant_budgets=budgets,
    )


def test_budget_state_tightens_as_the_day_uses_its_budget(sessions: sessionmaker[Session]) -> None:
    # Given 700 g used today (600 operational + 100 embodied) and 2000 g earlier this month
    with sessions() as s, s.begin():
        s.add(_entry(1, "t1", NOW - timedelta(hours=3), 600.0, 100.0))
        s.add(_entry(2, "t1", NOW - timedelta(days=5), 2000.0))
        s.add(_entry(3, "t1", NOW - timedelta(days=40), 9999.0))  # last month: not counted
    with sessions() as s:
        # When the fleet's budget is viewed
        view = budget_view(s, fleet=_fleet(), now=NOW)
    # Then today has 30 % left (TIGHTENING), the month 73 %, and the state is the tighter one
    assert view.today.used_g == 700.0 and view.today.left_g == 300.0
    assert view.today.state == "tightening"
    assert view.month.used_g == 2700.0 and view.month.state == "normal"
    assert view.state == "tightening"


def test_the_pacers_daily_target_and_price_are_shown(sessions: sessionmaker[Session]) -> None:
    # Given the pacer set today's target to 800 g at a price
    with sessions() as s, s.begin():
        s.add(_entry(1, "t1", NOW - timedelta(hours=1), 750.0))
        s.add(
            CarbonPacing(
                scope="fleet",
                day="2026-11-22",
                budget_g=800.0,
                spent_g=750.0,
                price_per_g=0.002,
                updated_at=NOW,
            )
        )
    with sessions() as s:
        view = budget_view(s, fleet=_fleet(), now=NOW)
    # Then the day's budget is the pacer's, with under 10 % left: CRITICAL
    assert view.today.budget_g == 800.0
    assert view.state == "critical" and view.pacing_price_per_g == 0.002


def test_a_tenant_sees_its_own_budget_and_use(sessions: sessionmaker[Session]) -> None:
    # Given two tenants, acme with its own budget in fleet.yaml
    with sessions() as s, s.begin():
        s.add_all(
            [
                Tenant(id="t-acme", name="acme", created_at=NOW),
                Tenant(id="t-other", name="other", created_at=NOW),
            ]
        )
        s.add(_entry(1, "t-acme", NOW - timedelta(hours=1), 100.0))
        s.add(_entry(2, "t-other", NOW - timedelta(hours=1), 900.0))
    with sessions() as s:
        view = budget_view(
            s, fleet=_fleet(acme=CarbonBudget(g_per_day=400.0)), tenant_id="t-acme", now=NOW
        )
        other = budget_view(
            s, fleet=_fleet(acme=CarbonBudget(g_per_day=400.0)), tenant_id="t-other", now=NOW
        )
    # Then acme's view counts only its own carbon against its own budget
    assert view.scope == "t-acme" and view.today.used_g == 100.0
    assert view.today.budget_g == 400.0 and view.today.left_fraction == 0.75
    # and a tenant without a budget gets no state from the fleet's
    assert other.today.budget_g is None and other.state == "normal"


def test_metrics_count_tokens_energy_and_durations_in_base_units(
    sessions: sessionmaker[Session], pinned_now: datetime
) -> None:
    # Given one row that ended a minute ago (3000 output tokens) and one long ago
    now = pinned_now
    with sessions() as s, s.begin():
        s.add(
            _entry(1, "t1", now - timedelta(minutes=11), 10.0, output_tokens=3000, input_tokens=600)
        )
        s.add(
            _entry(2, "t1", now - timedelta(days=2), 5.0, output_tokens=99999, embodied_co2_g=1.5)
        )
    # When the registry is scraped
    text = generate_latest(make_registry(sessions)).decode()
    # Then tokens are a counter (rate() gives tokens/s) and the counters hold the ledger totals
    assert 'gridshift_tokens_total{kind="output"} 102999.0' in text
    assert 'gridshift_tokens_total{kind="input"} 600.0' in text
    assert 'gridshift_co2_grams_total{kind="location",site="de-frankfurt"} 15.0' in text
    assert 'gridshift_co2_grams_total{kind="embodied",site="de-frankfurt"} 1.5' in text
    # and energy is in joules (0.12 kWh = 432,000 J)
    assert 'gridshift_energy_joules_total{method="estimated",site="de-frankfurt"} 432000.0' in text
    assert 'gridshift_requests_total{outcome="failed"} 2.0' in text
    # and shard durations (10 minutes each) fill a histogram in seconds
    assert 'gridshift_shard_duration_seconds_bucket{le="300.0"} 0.0' in text
    assert 'gridshift_shard_duration_seconds_bucket{le="900.0"} 2.0' in text
    assert "gridshift_shard_duration_seconds_sum 1200.0" in text
    assert "gridshift_planner_solve_seconds_count 0.0" in text
    assert "gridshift_lease_expiries_total 0.0" in text


def test_a_breach_is_an_event_in_the_view_the_metrics_and_the_report(
    sessions: sessionmaker[Session],
) -> None:
    import json

    from scheduler.review.reports import ledger_entries, render_report

    # Given yesterday closed at 1300 g against its 1000 g budget, and today over by 50 g so far
    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    with sessions() as s, s.begin():
        s.add(_entry(1, "t1", NOW - timedelta(days=1), 1300.0))
        s.add(_entry(2, "t1", NOW - timedelta(hours=2), 1050.0))
        for day, spent in ((yesterday, 1300.0), (NOW.date().isoformat(), 0.0)):
            s.add(
                CarbonPacing(
                    scope="fleet",
                    day=day,
                    budget_g=1000.0,
                    spent_g=spent,
                    price_per_g=0.0,
                    updated_at=NOW,
                )
            )
    # When the budget is viewed, the metrics scraped and a report rendered
    with sessions() as s:
        view = budget_view(s, fleet=_fleet(), now=NOW)
        rows = ledger_entries(s, NOW - timedelta(days=2), NOW + timedelta(hours=1))
        body = json.loads(render_report(rows, "json", NOW - timedelta(days=2), NOW, session=s)[0])
    text = generate_latest(make_registry(sessions)).decode()
    # Then today's breach is a field with the overspend, the metric counts both days, and the
    # report lists each breached day
    assert view.breached == ["today"] and view.today.breached
    assert view.today.overspent_g == 50.0
    assert 'gridshift_budget_breaches_total{scope="fleet"} 2.0' in text
    assert [b["day"] for b in body["budget_breaches"]] == [yesterday, NOW.date().isoformat()]
    assert body["budget_breaches"][0]["overspent_g"] == 300.0
