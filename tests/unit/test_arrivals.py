"""Expected arrivals: reservations learned from history, held in the plan, never output."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from optimizer_helpers import HOUR, T0, batch, fleet, problem, site

from scheduler.optimizer.arrivals import (
    ArrivalProfile,
    arrival_ratio,
    is_reservation,
    reservations,
)
from scheduler.optimizer.planner import plan_problem
from scheduler.optimizer.validate import price, validate_plan

DAY = timedelta(hours=24)


def test_a_batch_of_yesterday_is_expected_again_today_with_its_window_and_work() -> None:
    # Given one batch received yesterday at 02:30 with a 6 h window, one day of history
    b = batch("y", gpu_hours=3.0, requests=30, start_h=-21.5, deadline_h=-15.5, sites=["a"])
    # When the re-plan at 01:00 today looks 48 h ahead
    got = reservations([b], T0 + HOUR, T0 + 48 * HOUR, slot_minutes=60, periods=1)
    # Then the same work is expected today and tomorrow from the first slot after 02:30, due
    # by the slot of 08:30
    assert [(r.submitted_at, r.deadline) for r in got] == [
        (T0 + 3 * HOUR, T0 + 8 * HOUR),
        (T0 + 27 * HOUR, T0 + 32 * HOUR),
    ]
    r = got[0]
    assert is_reservation(r.id)
    assert (r.requests, r.input_tokens, r.sites, r.model) == (30, b.input_tokens, ("a",), "small")


def test_each_day_of_history_weighs_one_over_the_days_and_scale_multiplies() -> None:
    # Given the same nightly batch on each of the last seven days
    week = [batch(f"d{k}", gpu_hours=7.0, requests=70, start_h=2 - 24 * k, deadline_h=8 - 24 * k)
            for k in range(1, 8)]  # fmt: skip
    # When reservations are made from seven days, then from seven days at half scale
    full = reservations(week, T0, T0 + 24 * HOUR, slot_minutes=60, periods=7)
    half = reservations(week, T0, T0 + 24 * HOUR, slot_minutes=60, periods=7, scale=0.5)
    # Then tonight's expected batch holds one batch's work (7 x 1/7), and half of it at 0.5
    assert [r.input_tokens for r in full] == pytest.approx([week[0].input_tokens])
    assert [r.input_tokens for r in half] == pytest.approx([week[0].input_tokens / 2])
    assert reservations(week, T0, T0 + 24 * HOUR, slot_minutes=60, scale=0.0) == ()


def test_a_decision_never_learns_from_batches_submitted_at_or_after_it() -> None:
    # Given a batch submitted exactly at the decision time and one after it
    now = T0 + 5 * HOUR
    later = [batch("now", start_h=5, deadline_h=9), batch("next", start_h=6, deadline_h=12)]
    # Then they teach nothing (only earlier batches are history)
    assert reservations(later, now, now + 48 * HOUR, slot_minutes=60, periods=1) == ()
    # And history older than the learning window is ignored too
    old = [batch("old", start_h=-24 * 3 + 6, deadline_h=-24 * 3 + 10)]
    assert reservations(old, now, now + 48 * HOUR, slot_minutes=60, periods=2) == ()


def test_a_window_cut_by_the_horizon_reserves_its_share_inside() -> None:
    # Given a batch expected at 20:00 with a 10 h window and a horizon ending at 24:00
    b = batch("w", gpu_hours=10.0, start_h=-4, deadline_h=6)
    got = reservations([b], T0, T0 + 24 * HOUR, slot_minutes=60, periods=1)
    # Then it reserves the 4 h of its window inside the horizon, 40 % of its work
    assert [(r.submitted_at, r.deadline) for r in got] == [(T0 + 20 * HOUR, T0 + 24 * HOUR)]
    assert got[0].input_tokens == pytest.approx(0.4 * b.input_tokens)


def test_like_batches_of_the_same_hour_are_one_reservation() -> None:
    # Given two batches yesterday in the same hour, same window, sites and model, and a third
    # for another model
    hist = [
        batch("a", gpu_hours=1.0, start_h=-20.2, deadline_h=-14.2),
        batch("b", gpu_hours=2.0, start_h=-20.6, deadline_h=-14.6, priority=2.0),
        batch("c", gpu_hours=1.0, start_h=-20.2, deadline_h=-14.2, model="big"),
    ]
    got = reservations(hist, T0, T0 + 24 * HOUR, slot_minutes=60, periods=1)
    # Then the first two are summed (priority weighted by requests), the third kept apart
    by_model = {r.model: r for r in got}
    assert len(got) == 2
    assert by_model["small"].input_tokens == pytest.approx(hist[0].input_tokens * 3)
    assert by_model["small"].priority == pytest.approx(1.5)


def test_the_profile_object_reserves_as_the_function() -> None:
    b = batch("y", start_h=-20, deadline_h=-10)
    profile = ArrivalProfile(period=DAY, periods=1, scale=2.0)
    direct = reservations([b], T0, T0 + DAY, slot_minutes=60, periods=1, scale=2.0)
    assert profile.reserve([b], T0, T0 + DAY, 60) == direct


# ---------------------------------------------------------------- in the plan


def _night() -> dict[str, object]:
    # One GPU at one site, 4 hourly slots; carbon 100, 500, 50, 400. A real batch (1 GPU-hour)
    # may run in any slot; the nightly batch, expected at 02:00 and due by 03:00, needs 02:00.
    return {
        "the_fleet": fleet([site("a", gpus=1)]),
        "carbon": {"a": [100.0, 500.0, 50.0, 400.0]},
    }


def test_a_reservation_keeps_the_clean_slot_for_the_work_expected_in_it() -> None:
    night = _night()
    real = batch("r", gpu_hours=1.0, requests=4, start_h=0, deadline_h=4)
    expected = batch("expected~0", gpu_hours=1.0, requests=4, start_h=2, deadline_h=3)
    bare = problem(night["the_fleet"], night["carbon"], [real])  # type: ignore[arg-type]
    held = dataclasses.replace(bare, reserved=(expected,))
    # When planned without, then with, the reservation
    alone, hedged = plan_problem(bare), plan_problem(held)
    # Then alone the real batch takes the cleanest slot (02:00); with the reservation it takes
    # the next cleanest (00:00) and leaves 02:00 to tonight's expected batch
    assert {a.slot for a in alone.assignments} == {T0 + 2 * HOUR}
    assert {a.slot for a in hedged.assignments} == {T0}
    # And the reservation is in neither the assignments nor the unplaced list nor the totals
    assert all(not is_reservation(a.batch) for a in hedged.assignments)
    assert hedged.unplaced == ()
    assert hedged.totals.co2_g == pytest.approx(price(bare, hedged.assignments).totals.co2_g)
    assert hedged.totals.co2_g == pytest.approx(100.0 * 1.0)  # 1 kWh at 100 g/kWh
    assert any("expected arrivals" in n for n in hedged.notes)
    # And the plan checks out against the problem without reservations (the contract's checker)
    assert validate_plan(bare, hedged).ok
    # And the baselines are the real batches' own
    assert hedged.baselines == alone.baselines


def test_a_reservation_that_cannot_fit_is_dropped_silently_and_real_work_still_placed() -> None:
    night = _night()
    real = batch("r", gpu_hours=1.0, requests=4, start_h=0, deadline_h=4)
    huge = batch("expected~0", gpu_hours=50.0, requests=4, start_h=2, deadline_h=3)
    bare = problem(night["the_fleet"], night["carbon"], [real])  # type: ignore[arg-type]
    plan = plan_problem(dataclasses.replace(bare, reserved=(huge,)))
    assert sum(a.requests for a in plan.assignments) == 4
    assert plan.unplaced == ()


def test_reservations_never_cost_a_submitted_batch_its_place() -> None:
    # Given one GPU-hour left in the only slot that a real batch's window allows, and a larger
    # reservation wanting the same slot
    the_fleet = fleet([site("a", gpus=1)])
    real = batch("r", gpu_hours=1.0, requests=4, start_h=2, deadline_h=3)
    rival = batch("expected~0", gpu_hours=1.0, requests=40, start_h=2, deadline_h=3)
    bare = problem(the_fleet, {"a": [100.0, 500.0, 50.0, 400.0]}, [real])
    # When planned with the reservation
    plan = plan_problem(dataclasses.replace(bare, reserved=(rival,)))
    # Then the submitted batch is placed, the reservation gave way
    assert sum(a.requests for a in plan.assignments if a.batch == "r") == 4
    assert plan.unplaced == ()


# ---------------------------------------------------------------- adapting to tonight


def _evenings(days: int, per_evening: int, *, tonight: int) -> list:
    # ``per_evening`` 1-GPU-hour batches between 18:00 and 24:00 on each of ``days`` earlier
    # days, and ``tonight`` of them this evening (T0 is midnight: the decision is at T0)
    out = []
    for k in range(1, days + 1):
        for i in range(per_evening):
            h = -24 * k - 6 + i * 6 / per_evening
            out.append(batch(f"d{k}-{i}", start_h=h, deadline_h=h + 8))
    for i in range(tonight):
        h = -6 + i * 6 / max(1, tonight)
        out.append(batch(f"t-{i}", start_h=h, deadline_h=h + 8))
    return out


def test_an_evening_like_the_usual_ones_keeps_the_profile_as_learned() -> None:
    hist = _evenings(7, 4, tonight=4)
    assert arrival_ratio(hist, T0, period=DAY, periods=7) == pytest.approx(1.0)


def test_a_quiet_or_busy_evening_scales_tonights_reservations_with_it() -> None:
    # Given a week of four batches an evening, and tonight none, then twelve
    quiet = arrival_ratio(_evenings(7, 4, tonight=0), T0, period=DAY, periods=7)
    busy = arrival_ratio(_evenings(7, 4, tonight=12), T0, period=DAY, periods=7)
    # Then the ratio follows tonight's evidence (shrunk by two typical batches each side)
    assert quiet == pytest.approx(2 / 6)
    assert busy == pytest.approx(14 / 6)
    # And the reservations made at midnight scale with it
    hist = _evenings(7, 4, tonight=12) + [batch("nightly", start_h=-22, deadline_h=-18)]
    held = sum(r.input_tokens for r in reservations(hist, T0, T0 + DAY, slot_minutes=60))
    flat = sum(
        r.input_tokens for r in reservations(hist, T0, T0 + DAY, slot_minutes=60, adapt=False)
    )
    assert held == pytest.approx(flat * arrival_ratio(hist, T0, period=DAY, periods=7))
    assert held > flat


def test_the_ratio_is_one_without_expectation_and_clipped_to_four() -> None:
    # Nothing expected in the last quarter day: no evidence either way
    assert arrival_ratio([batch("x", start_h=-1, deadline_h=3)], T0, period=DAY, periods=7) == 1.0
    # Far busier than ever: at most fourfold
    assert arrival_ratio(_evenings(7, 1, tonight=40), T0, period=DAY, periods=7) == 4.0


def test_an_evening_within_the_usual_spread_changes_nothing() -> None:
    # One batch more than the usual four: within 25 %, no evidence of a different night
    assert arrival_ratio(_evenings(7, 4, tonight=5), T0, period=DAY, periods=7) == 1.0
    # Twelve instead of four moves it, unless the earlier evenings themselves swung that much
    steady = _evenings(2, 4, tonight=12)
    swinging = steady + [
        batch(f"extra-{i}", start_h=-30 + i / 4, deadline_h=-22) for i in range(12)
    ]
    assert arrival_ratio(steady, T0, period=DAY, periods=2) > 1.0
    assert arrival_ratio(swinging, T0, period=DAY, periods=2) == 1.0
