"""The carbon budget in the service: states cap auto tiers, and the pacer closes each UTC day."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from execution_helpers import T0, Harness, book_co2, chat_line, fixed_signals
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.budget import budget_states, quality_ceilings
from scheduler.dispatch.replan import _part_batches, replan
from scheduler.domain import BudgetState, CarbonBudget, Fleet, Profile
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.samples import load_sample_fleet
from scheduler.store.files import save_file
from scheduler.store.tables import AssignmentRecord, CarbonPacing, PlanRecord
from scheduler.store.tenants import create_tenant

DAY_G = 1000.0


def _fleet(**tenant_budgets: CarbonBudget) -> Fleet:
    """The sample fleet, where the LARGER model is the greener one (so tiers matter)."""
    fleet = load_sample_fleet()
    lean = Profile(gpus=1, prefill_tok_s=8000, decode_tok_s=480, power_w=20)
    models = tuple(
        dataclasses.replace(m, profiles={**m.profiles, "CPU": lean}) if m.name == "tiny-chat" else m
        for m in fleet.models
    )
    return dataclasses.replace(
        fleet,
        models=models,
        carbon_budget=CarbonBudget(g_per_day=DAY_G),
        tenant_budgets=tenant_budgets,
    )


def _harness(tmp_path: Path, sessions: sessionmaker[Session], fleet: Fleet) -> Harness:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'g.db'}")
    return Harness(settings, sessions, fleet, None, fixed_signals(fleet, T0))  # type: ignore[arg-type]


def _submit_auto(h: Harness, tmp: Path, tenant: str, *, now: datetime = T0) -> tuple[str, str]:
    """An ``auto`` batch (min_quality 0.4) of ``tenant``: returns (tenant id, batch id)."""
    path = tmp / f"{tenant}.jsonl"
    lines = [chat_line(f"r{i}", model="auto") for i in range(3)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with h.sessions() as s:
        tenant_id = create_tenant(s, tenant).id
        s.commit()
    with h.sessions() as s:
        f = save_file(
            s, h.settings.files_dir, path, tenant_id=tenant_id, filename=path.name, purpose="batch"
        )
    with h.sessions() as s, s.begin():
        opts = BatchOptions(input_file_id=f.id, endpoint="/v1/chat/completions", min_quality=0.4)
        b = create_batch(s, h.fleet, tenant_id, opts, max_requests=1000, now=int(now.timestamp()))
        assert b.status == "in_progress", b.errors
        return tenant_id, b.id


def _planned_models(h: Harness, plan_id: int | None) -> set[str]:
    assert plan_id is not None
    with h.sessions() as s:
        return set(
            s.scalars(select(AssignmentRecord.model).where(AssignmentRecord.plan_id == plan_id))
        )


def test_a_day_that_spent_60_percent_plans_an_auto_batch_on_a_smaller_tier_than_a_fresh_day(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given an auto batch on a fleet whose larger model is also the greener one
    h = _harness(tmp_path, sessions, _fleet())
    _submit_auto(h, tmp_path, "acme")
    # When a fresh day plans it
    fresh = replan(h.sessions, h.settings, h.fleet, T0, trigger="manual", signals_for=h.signals_for)
    # Then it runs on the larger (greener) tier
    assert _planned_models(h, fresh) == {"tiny-chat"}
    # When 60 % of the day's budget has been spent and it is planned again
    book_co2(h, T0 - timedelta(minutes=30), 0.6 * DAY_G)
    later = T0 + timedelta(minutes=5)
    tight = replan(
        h.sessions, h.settings, h.fleet, later, trigger="manual", signals_for=h.signals_for
    )
    # Then the TIGHTENING state forbids the largest tier: it runs on the smaller one
    assert _planned_models(h, tight) == {"tiny-chat-mini"}
    with h.sessions() as s:
        plan = s.get(PlanRecord, tight)
        assert plan is not None
        assert "carbon budget state (fleet): tightening" in (plan.notes or [])


def test_a_tenant_budget_restricts_only_that_tenants_auto_work(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given two tenants' auto batches, one tenant with its own budget 80 % spent today
    h = _harness(tmp_path, sessions, _fleet(thrifty=CarbonBudget(g_per_day=100.0)))
    thrifty, _ = _submit_auto(h, tmp_path, "thrifty")
    _submit_auto(h, tmp_path, "lavish")
    book_co2(h, T0 - timedelta(minutes=30), 80.0, tenant_id=thrifty)
    # When the budget states and the tier ceilings are computed
    with h.sessions() as s:
        states = budget_states(s, h.fleet, T0)
        batches, _ = _part_batches(s, h.fleet, T0)
    ceilings = quality_ceilings(batches, states, h.fleet)
    # Then only the thrifty tenant's part is capped at the smallest tier
    assert states.tenants == {thrifty: BudgetState.RESTRICTED}
    assert states.fleet is BudgetState.NORMAL
    assert {b.tenant for b in batches if b.id in ceilings} == {thrifty}
    assert set(ceilings.values()) == {0.4}


def test_crossing_midnight_writes_one_pacing_row_with_a_higher_price_after_an_overspent_day(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given the dispatcher ticking late on day 1, which overspends its budget by half
    h = _harness(tmp_path, sessions, _fleet())
    day1 = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)
    h.tick(day1)
    book_co2(h, day1 + timedelta(minutes=10), 1.5 * DAY_G)
    with h.sessions() as s:
        before = list(s.scalars(select(CarbonPacing)))
    # When it ticks across midnight, several times
    for minutes in (125, 130, 190):
        h.tick(day1 + timedelta(minutes=minutes))
    # Then exactly one row was added, for day 2, with a higher price
    with h.sessions() as s:
        rows = {
            r.day: r for r in s.scalars(select(CarbonPacing).where(CarbonPacing.scope == "fleet"))
        }
    assert [r.day for r in before] == ["2026-11-22"]
    assert sorted(rows) == ["2026-11-22", "2026-11-23"]
    assert rows["2026-11-23"].price_per_g > rows["2026-11-22"].price_per_g
    # and day 1 books what it spent, while day 2's target shrinks to absorb the overspend
    assert rows["2026-11-22"].spent_g == pytest.approx(1.5 * DAY_G)
    assert rows["2026-11-23"].budget_g < rows["2026-11-22"].budget_g


def test_the_planners_cap_is_the_pacers_daily_target_also_for_a_month_only_budget(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a month-only budget of 30 kg in a 30-day month (so 1 kg a day) and 200 g booked today
    from scheduler.dispatch.budget import advance_pacer, carbon_cap

    fleet = dataclasses.replace(_fleet(), carbon_budget=CarbonBudget(g_per_month=30 * DAY_G))
    h = _harness(tmp_path, sessions, fleet)
    advance_pacer(h.sessions, fleet, T0)
    book_co2(h, T0 - timedelta(minutes=20), 200.0)
    # When the cap of a plan whose horizon ends tonight is computed
    midnight = T0.replace(hour=0, minute=0)
    with h.sessions() as s:
        target = s.scalars(select(CarbonPacing.budget_g)).one()
        cap, _ = carbon_cap(s, fleet, T0, midnight + timedelta(days=1))
    # Then the month's budget paces (1 kg today) and the cap is what is left of it
    assert target == pytest.approx(DAY_G)
    assert cap == pytest.approx(DAY_G - 200.0)


def test_queued_and_running_work_counts_against_the_cap(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a daily budget and a planned batch, with its first shards queued
    from scheduler.dispatch.budget import carbon_cap, committed_co2_g
    from scheduler.store.db import transaction
    from scheduler.store.tables import Shard

    h = _harness(tmp_path, sessions, _fleet())
    _submit_auto(h, tmp_path, "acme")
    replan(h.sessions, h.settings, h.fleet, T0, trigger="test", signals_for=h.signals_for)
    with transaction(h.sessions) as s:
        shards = list(s.scalars(select(Shard)))
        for sh in shards:
            sh.status = "queued"
    midnight = T0.replace(hour=0, minute=0)
    with h.sessions() as s:
        committed = committed_co2_g(s)
        cap, _ = carbon_cap(s, h.fleet, T0, midnight + timedelta(days=1))
    # Then the queued work's planned CO2 is taken from today's target
    assert committed > 0
    assert cap == pytest.approx(DAY_G - committed)


def test_both_the_daily_and_the_monthly_limit_apply(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given g_per_day 0.002 and g_per_month 0.31 (so the month paces about 0.01 g a day)
    from scheduler.dispatch.budget import advance_pacer, carbon_cap

    budget = CarbonBudget(g_per_day=0.002, g_per_month=0.31)
    fleet = dataclasses.replace(_fleet(), carbon_budget=budget)
    h = _harness(tmp_path, sessions, fleet)
    advance_pacer(h.sessions, fleet, T0)
    midnight = T0.replace(hour=0, minute=0)
    with h.sessions() as s:
        target = s.scalars(select(CarbonPacing.budget_g)).one()
        cap, _ = carbon_cap(s, fleet, T0, midnight + timedelta(days=1))
    # Then today's budget and the plan's cap are the daily limit, not the month's pace
    assert target == pytest.approx(0.002)
    assert cap == pytest.approx(0.002)


def test_the_planners_caps_are_per_day_so_today_cannot_borrow_from_tomorrow(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given a month-only budget pacing 1 kg a day and 200 g booked today
    from scheduler.dispatch.budget import advance_pacer, carbon_cap, carbon_caps

    fleet = dataclasses.replace(_fleet(), carbon_budget=CarbonBudget(g_per_month=30 * DAY_G))
    h = _harness(tmp_path, sessions, fleet)
    advance_pacer(h.sessions, fleet, T0)
    book_co2(h, T0 - timedelta(minutes=20), 200.0)
    # When the caps of a plan whose horizon reaches 06:00 tomorrow are computed
    midnight = T0.replace(hour=0, minute=0)
    with h.sessions() as s:
        caps, _ = carbon_caps(s, fleet, T0, midnight + timedelta(days=1, hours=6))
        total, _ = carbon_cap(s, fleet, T0, midnight + timedelta(days=1, hours=6))
    # Then today keeps what is left of its target and tomorrow gets its own target, apart
    assert caps is not None
    assert caps == {
        midnight.date(): pytest.approx(DAY_G - 200.0),
        midnight.date() + timedelta(days=1): pytest.approx(DAY_G),
    }
    assert total == pytest.approx(2 * DAY_G - 200.0)


def test_plan_notes_say_the_state_planned_under_and_the_state_after_its_placement(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    # Given the CO2 an auto batch's plan places today, measured under the ample 1 kg budget
    h = _harness(tmp_path, sessions, _fleet())
    _submit_auto(h, tmp_path, "acme")
    first = replan(h.sessions, h.settings, h.fleet, T0, trigger="manual", signals_for=h.signals_for)
    with h.sessions() as s:
        rows = s.scalars(select(AssignmentRecord).where(AssignmentRecord.plan_id == first)).all()
        today = sum(r.co2_g for r in rows if r.slot_start.astimezone(UTC).date() == T0.date())
    assert 0 < today < DAY_G / 2
    # When it is planned again under a daily limit of that CO2 / 0.95 (NORMAL: nothing booked)
    fleet = dataclasses.replace(h.fleet, carbon_budget=CarbonBudget(g_per_day=today / 0.95))
    plan_id = replan(h.sessions, h.settings, fleet, T0, trigger="manual", signals_for=h.signals_for)
    # Then the notes keep the state it was planned under and add the state after placement:
    # 5 % of today's target left, CRITICAL
    with h.sessions() as s:
        plan = s.get(PlanRecord, plan_id)
        assert plan is not None
        notes = plan.notes or []
    assert "carbon budget state (fleet): normal" in notes
    (after,) = [n for n in notes if n.startswith("carbon budget state (fleet) after this plan")]
    assert after.startswith("carbon budget state (fleet) after this plan: critical (5 % "), after
    assert after.endswith("planned under: normal")
