"""Site signals for the review: cached points first (actual over forecast), else booked values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from scheduler.review.signals import signal_at, site_signals
from scheduler.store.tables import (
    AssignmentRecord,
    Batch,
    File,
    ForecastPoint,
    PlanRecord,
    Tenant,
)

T0 = datetime(2026, 11, 22, tzinfo=UTC)
H = timedelta(hours=1)


def _point(
    key: str, signal: str, kind: str, t: datetime, value: float, fetched: datetime
) -> ForecastPoint:
    return ForecastPoint(
        provider="p", key=key, signal=signal, kind=kind, time=t, value=value, fetched_at=fetched
    )


def test_cached_actuals_win_over_forecasts_and_cache_keys_map_to_sites(
    sessions: sessionmaker[Session],
) -> None:
    # Given forecasts for three slots of a site (cache key "site|{options}") and an actual for one
    with sessions() as s, s.begin():
        key = 'de-frankfurt|{"zone":"DE"}'
        s.add_all(
            [_point(key, "carbon", "forecast", T0 + i * H, 300.0 + i, T0 - H) for i in range(3)]
        )
        s.add_all([_point(key, "price", "forecast", T0 + i * H, 0.1, T0 - H) for i in range(3)])
        s.add(_point(key, "carbon", "actual", T0 + H, 250.0, T0 + 2 * H))
        s.add(_point("de-frankfurt-2|{}", "carbon", "forecast", T0, 999.0, T0))  # another site
    with sessions() as s:
        # When the series and one slot's value are read
        [series] = site_signals(s, ["de-frankfurt"], T0, T0 + 3 * H)
        at = signal_at(s, "de-frankfurt", "carbon_g_per_kwh", T0 + H + timedelta(minutes=20))
    # Then the actual replaced the forecast of its slot, and the other site's point stayed out
    assert [p.carbon_g_per_kwh for p in series.points] == [300.0, 250.0, 302.0]
    assert series.source == "cache" and all(p.price_per_kwh == 0.1 for p in series.points)
    assert at == 250.0


def test_a_site_without_cached_signals_shows_its_planned_intensity(
    sessions: sessionmaker[Session],
) -> None:
    # Given a plan with assignments at a site whose signals were never cached
    with sessions() as s, s.begin():
        s.add(Tenant(id="t", name="t", created_at=T0))
        s.flush()
        s.add(
            File(
                id="f",
                tenant_id="t",
                filename="x",
                purpose="batch",
                bytes=1,
                sha256="0",
                path="/dev/null",
                created_at=0,
            )
        )
        s.flush()
        s.add(
            Batch(
                id="b",
                tenant_id="t",
                endpoint="/v1/chat/completions",
                input_file_id="f",
                completion_window="24h",
                status="in_progress",
                created_at=0,
                deadline=T0 + 9 * H,
            )
        )
        plan = PlanRecord(
            created_at=T0,
            trigger="t",
            status="optimal",
            objectives=[],
            tolerances=[],
            totals={},
            baselines={},
            unplaced=[],
            solve_s=0.0,
            horizon_start=T0,
            horizon_end=T0 + 9 * H,
            is_current=True,
        )
        s.add(plan)
        s.flush()
        for i, ci in enumerate((120.0, 80.0)):
            s.add(
                AssignmentRecord(
                    plan_id=plan.id,
                    batch_id="b",
                    part_id="b",
                    site="se-lulea",
                    pool="h100",
                    model="m",
                    slot_start=T0 + (2 + i) * H,
                    requests=1,
                    input_tokens=1,
                    output_tokens=1,
                    gpu_hours=1,
                    energy_kwh=2.0,
                    co2_g=ci * 2,
                    cost=0.4,
                    water_l=0,
                    carbon_g_per_kwh=ci,
                )
            )
    with sessions() as s:
        # When its signals are read
        [series] = site_signals(s, ["se-lulea"], T0, T0 + 9 * H)
    # Then the booked values stand in, labelled as such, with no invented renewables
    assert series.source == "booked"
    assert [(p.time, p.carbon_g_per_kwh, p.price_per_kwh) for p in series.points] == [
        (T0 + 2 * H, 120.0, 0.2),
        (T0 + 3 * H, 80.0, 0.2),
    ]
    assert all(p.renewable_kw is None for p in series.points)
