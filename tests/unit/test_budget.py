"""Carbon budget states, model tiers per state, and the monthly pacer on a month of real traces."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.domain import BudgetState, ModelSpec, PlanningBatch
from scheduler.optimizer.budget import (
    PacerState,
    allowed_models_for,
    budget_state,
    close_day,
    daily_target_g,
    restrict_batch,
    should_defer,
    start_month,
)

MODELS = (
    ModelSpec("m8b", 0.55, {}),
    ModelSpec("m8b-alt", 0.55, {}),
    ModelSpec("m32b", 0.74, {}),
    ModelSpec("m70b", 0.80, {}),
)


@pytest.mark.parametrize(
    ("left", "state"),
    [
        (100.0, BudgetState.NORMAL),
        (50.1, BudgetState.NORMAL),
        (50.0, BudgetState.TIGHTENING),
        (25.1, BudgetState.TIGHTENING),
        (25.0, BudgetState.RESTRICTED),
        (10.1, BudgetState.RESTRICTED),
        (10.0, BudgetState.CRITICAL),
        (-5.0, BudgetState.CRITICAL),
    ],
)
def test_budget_state_follows_the_share_left(left: float, state: BudgetState) -> None:
    # Given a 100 g budget with `left` grams left, Then the state follows the thresholds
    assert budget_state(left, 100.0) is state


def test_a_zero_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        budget_state(0.0, 0.0)


@pytest.mark.parametrize(
    ("state", "floor", "expected"),
    [
        (BudgetState.NORMAL, 0.5, ("m8b", "m8b-alt", "m32b", "m70b")),
        (BudgetState.TIGHTENING, 0.5, ("m8b", "m8b-alt", "m32b")),
        (BudgetState.RESTRICTED, 0.5, ("m8b", "m8b-alt")),
        (BudgetState.CRITICAL, 0.5, ("m8b",)),
        (BudgetState.RESTRICTED, 0.7, ("m32b",)),
        (BudgetState.TIGHTENING, 0.8, ("m70b",)),  # the only qualifying tier is kept
        (BudgetState.NORMAL, 0.9, ()),
    ],
)
def test_each_state_narrows_the_models_an_auto_batch_may_use(
    state: BudgetState, floor: float, expected: tuple[str, ...]
) -> None:
    assert allowed_models_for(state, MODELS, floor) == expected


def _batch(**kw: object) -> PlanningBatch:
    base: dict[str, object] = dict(
        id="b",
        requests=1,
        input_tokens=1.0,
        output_tokens=1.0,
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
        deadline=datetime(2026, 1, 3, tzinfo=UTC),
        min_quality=0.7,
    )
    base.update(kw)
    return PlanningBatch(**base)  # type: ignore[arg-type]


def test_a_critical_budget_pins_auto_batches_and_defers_what_can_wait() -> None:
    # Given an auto batch due in two days and a plan horizon ending after one
    batch, horizon_end = _batch(), datetime(2026, 1, 2, tzinfo=UTC)
    # When the budget is critical, Then it is pinned to the smallest model and deferred
    pinned = restrict_batch(batch, BudgetState.CRITICAL, MODELS)
    assert (pinned.model, pinned.min_quality) == ("m32b", None)
    assert should_defer(batch, BudgetState.CRITICAL, horizon_end)
    # And in a normal state it is left alone
    assert restrict_batch(batch, BudgetState.NORMAL, MODELS) == batch
    assert not should_defer(batch, BudgetState.RESTRICTED, horizon_end)


def test_a_batch_naming_its_model_is_never_changed() -> None:
    batch = _batch(model="m70b", min_quality=None)
    assert restrict_batch(batch, BudgetState.CRITICAL, MODELS) == batch


def test_the_price_rises_after_an_overspent_day_and_falls_after_an_underspent_one() -> None:
    # Given a 30-day month of 3000 g (100 g per day) at a price of 1e-4 per g
    state = start_month(3000.0, 30, price_per_g=1e-4)
    assert daily_target_g(state) == pytest.approx(100.0)
    # When a day spends 150 g, Then the price rises by eta * 0.5 and tomorrow's share shrinks
    over = close_day(state, 150.0, eta_per_g=1e-4)
    assert over.price_per_g == pytest.approx(1.5e-4)
    assert daily_target_g(over) == pytest.approx(2850.0 / 29)
    # When a day spends nothing, Then the price falls, but never below zero
    under = close_day(over, 0.0, eta_per_g=1e-4)
    assert under.price_per_g < over.price_per_g
    assert close_day(start_month(3000.0, 30), 0.0).price_per_g == 0.0


# ------------------------------------------------------------------ a month of real traces

ZONES = ("DE-LU", "US-CAL-CISO", "US-TEX-ERCO", "SG")
# Two model tiers: the large one uses 2.5x the energy and is worth 0.15 USD per base kWh more.
TIERS = ((1.0, 0.0), (2.5, -0.15))
# 40 jobs a day, 1.0-1.6 kWh each (base tier), each free to run in an 8-hour window.
JOBS = tuple((1.0 + 0.1 * (j % 7), j % 17) for j in range(40))


def _month(shared_dir: Path, month: str) -> dict[str, tuple[list[float], list[float]]]:
    data = shared_dir / "data"
    out = {}
    for zone in ZONES:
        carbon: list[float] = []
        prices: list[float] = []
        ci = data / "carbon_intensity" / "electricitymaps_hourly" / f"{zone}_2022_hourly.csv"
        with ci.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["Datetime (UTC)"][5:7] == month:
                    carbon.append(float(row["Carbon Intensity gCO₂eq/kWh (direct)"]))
        pr = data / "electricity_price" / "hourly_usd" / f"{zone}_electricity_prices_2022.csv"
        with pr.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["Datetime (UTC)"][5:7] == month:
                    prices.append(float(row["Price (USD/MWh)"]) / 1000.0)
        out[zone] = (carbon, prices)
    return out


def _day_co2_g(
    trace: dict[str, tuple[list[float], list[float]]], day: int, price_per_g: float
) -> float:
    """Each job takes its cheapest (zone, hour, tier) under cost + carbon price - tier value."""
    total = 0.0
    for base_kwh, first_hour in JOBS:
        best: tuple[float, float] | None = None
        for carbon, prices in trace.values():
            for hour in range(first_hour, first_hour + 8):
                i = day * 24 + hour
                for factor, value in TIERS:
                    kwh = base_kwh * factor
                    score = kwh * (prices[i] + price_per_g * carbon[i]) + value * base_kwh
                    if best is None or score < best[0]:
                        best = (score, kwh * carbon[i])
        assert best is not None
        total += best[1]
    return total


@pytest.mark.parametrize(("month", "share"), [("03", 0.5), ("09", 0.35)])
def test_the_pacer_lands_a_month_of_real_traces_within_2_percent_of_its_budget(
    shared_dir: Path, month: str, share: float
) -> None:
    # Given a month of hourly carbon and prices in four zones (Electricity Maps, 2022)
    trace = _month(shared_dir, month)
    days = len(trace[ZONES[0]][0]) // 24
    cheapest = sum(_day_co2_g(trace, d, 0.0) for d in range(days))
    cleanest = sum(_day_co2_g(trace, d, 1.0) for d in range(days))
    # and a budget between the cleanest and the cheapest month the jobs allow
    budget_g = cleanest + share * (cheapest - cleanest)
    assert cheapest > budget_g * 1.2  # without pacing the month overspends clearly
    # When every day is planned at the pacer's price and then closed
    state: PacerState = start_month(budget_g, days)
    prices = []
    for day in range(days):
        prices.append(state.price_per_g)
        state = close_day(state, _day_co2_g(trace, day, state.price_per_g))
    # Then the month lands within 2 % of its budget, with a price that moved
    assert abs(state.spent_g - budget_g) / budget_g < 0.02
    assert max(prices) > 0
