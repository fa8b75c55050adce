"""``scheduler.backtest``: the replay never peeks (actuals, later batches) and re-prices on actuals."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from optimizer_helpers import GPU_HOUR_TOKENS, NESO, SMALL, fleet, site

from scheduler.backtest import BacktestResult, backtest
from scheduler.contract.vintages import Vintages
from scheduler.domain import PlanningBatch, SlotSignal
from scheduler.forecasts import uk_archive

GB = fleet([site("gb")])
T0 = datetime(2023, 3, 14, 4, tzinfo=UTC)
HOUR = timedelta(hours=1)
SLOTS = [T0 + i * HOUR for i in range(47)]  # what the first real issue covers


def _vintages() -> Vintages:
    issues: dict[datetime, dict[tuple[str, datetime], SlotSignal]] = {}
    for issued, s in uk_archive.vintages(NESO / "fw48h", "gb", 60):
        issues.setdefault(issued, {})[(s.site, s.time)] = s
    return Vintages(60, issues)


def _actuals(scale: float = 1.0) -> dict[tuple[str, datetime], SlotSignal]:
    real = {s.time: s for s in uk_archive.actuals(NESO / "pt24h", "gb", 60)}
    return {
        ("gb", t): dataclasses.replace(
            real[t], carbon_g_per_kwh=real[t].carbon_g_per_kwh * (scale if t.hour % 2 else 1.0)
        )
        for t in SLOTS
    }


def _batches() -> list[PlanningBatch]:
    # Eight 2-GPU-hour batches arriving every 4 h, each due 18 h after it arrives.
    return [
        PlanningBatch(
            id=f"b{i}",
            requests=10,
            input_tokens=2 * GPU_HOUR_TOKENS,
            output_tokens=0.0,
            submitted_at=T0 + timedelta(hours=4 * i, minutes=17),
            deadline=T0 + timedelta(hours=4 * i + 18),
            model="small",
        )
        for i in range(8)
    ]


def _run(batches: list[PlanningBatch], actuals: dict | None = None) -> BacktestResult:
    return backtest(GB, batches, _vintages(), SLOTS, actuals or _actuals())


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    return _run(_batches())


def test_committed_plan_reprices_on_the_actuals_to_the_reported_totals(
    result: BacktestResult,
) -> None:
    # Then every batch ran, the committed plan passes the contract's checks on the actuals
    assert result.validation.ok, result.validation.violations
    assert result.committed.unplaced == ()
    assert result.strategies["rolling"]["co2_g"] == pytest.approx(
        result.validation.totals.co2_g, rel=1e-9
    )
    # And it used the issues as they were published (four issues by the last step)
    assert {d.vintage for d in result.decisions} >= {T0, datetime(2023, 3, 15, 2, tzinfo=UTC)}


def test_the_bound_is_no_worse_than_any_strategy(result: BacktestResult) -> None:
    s = result.strategies
    # Then the perfect-knowledge plan bounds the others, and each regret is measured against it
    for name in ("rolling", "rolling_known", "first_vintage", "asap", "carbon_greedy"):
        assert s[name]["co2_g"] >= s["bound"]["co2_g"] * (1 - 1e-9), name
    assert s["bound"]["regret_co2"] == 0.0
    assert s["rolling"]["regret_co2"] == pytest.approx(
        s["rolling"]["co2_g"] / s["bound"]["co2_g"] - 1
    )
    # And planning on forecasts beats running as soon as possible on this night
    assert s["rolling"]["co2_g"] < s["asap"]["co2_g"]


def test_changing_only_the_actuals_changes_no_decision(result: BacktestResult) -> None:
    # When the actuals of every odd hour are 40 % higher
    other = _run(_batches(), _actuals(1.4))
    # Then the same work ran at the same places and times, only priced differently
    assert other.committed.assignments == result.committed.assignments
    assert other.strategies["rolling"]["co2_g"] != result.strategies["rolling"]["co2_g"]


def test_removing_later_batches_changes_no_earlier_decision(result: BacktestResult) -> None:
    # When the batches submitted after 2023-03-15T00:00Z are left out
    cut = T0 + timedelta(hours=20)
    fewer = _run([b for b in _batches() if b.submitted_at <= cut])

    # Then every piece committed before the cut is the same
    def before(r: BacktestResult) -> list[object]:
        return [a for a in r.committed.assignments if a.slot <= cut]

    assert before(fewer) == before(result)
    assert len(fewer.committed.assignments) < len(result.committed.assignments)


def test_the_command_writes_both_files_and_the_plan_checks_out(tmp_path: Path) -> None:
    # Given the scenario as contract files: fleet, batches, vintages and actuals
    import json

    import yaml
    from typer.testing import CliRunner

    from scheduler.cli import build_app
    from scheduler.contract import read_plan, write_vintages
    from scheduler.forecasts.csv import write_forecasts_csv

    write_vintages(uk_archive.vintages(NESO / "fw48h", "gb", 60), tmp_path / "v.csv")
    write_forecasts_csv(_actuals().values(), tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "id": b.id,
                    "requests": b.requests,
                    "input_tokens": b.input_tokens,
                    "output_tokens": 0,
                    "submitted_at": b.submitted_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "deadline": b.deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "model": "small",
                }
            )
            + "\n"
            for b in _batches()
        )
    )
    yaml.safe_dump(
        {"slot_minutes": 60, "sites": [site("gb")], "models": [SMALL]},
        (tmp_path / "fleet.yaml").open("w"),
    )
    files = ["--fleet", "fleet.yaml", "--batches", "b.jsonl", "--vintages", "v.csv"]
    files += ["--actuals", "a.csv"]
    args = [f"{tmp_path / x}" if i % 2 else x for i, x in enumerate(files)]
    # When backtested from the command line, then checked by `gridshift plan --check`
    run = CliRunner().invoke(
        build_app(),
        [
            "backtest",
            *args,
            "--out",
            str(tmp_path / "r.json"),
            "--plan-out",
            str(tmp_path / "c.json"),
        ],
    )
    check = CliRunner().invoke(
        build_app(),
        ["plan", "--fleet", args[1], "--forecasts", args[7], "--batches", args[3]]
        + ["--check", str(tmp_path / "c.json")],
    )
    # Then it succeeds, prints the regret table, and the committed plan re-prices on the actuals
    assert run.exit_code == 0, run.output
    assert "perfect knowledge" in run.output and "regret" in run.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["strategies"]) == {
        "rolling",
        "rolling_no_reservations",
        "rolling_known",
        "bound",
        "first_vintage",
        "asap",
        "carbon_greedy",
    }
    assert check.exit_code == 0, check.output
    committed = read_plan(tmp_path / "c.json")
    assert committed.totals.co2_g == pytest.approx(result["strategies"]["rolling"]["co2_g"])


def _perfect_vintages(actuals: dict[tuple[str, datetime], SlotSignal]) -> Vintages:
    # One issue per hour whose values are the actuals: forecasts without error
    return Vintages(60, {t: {k: s for k, s in actuals.items() if k[1] >= t} for t in SLOTS})


def test_with_perfect_forecasts_and_every_batch_known_re_planning_loses_nothing() -> None:
    # Given forecasts equal to the actuals and every batch known from the start, CO2 first
    # with no tolerance (the fleet's default 1 % is spent again by every re-plan: see
    # docs/planning.md, "what the gap is made of")
    actuals, v, exact = _actuals(), _perfect_vintages(_actuals()), (0.0,)
    known = [dataclasses.replace(b, submitted_at=T0) for b in _batches()]
    # When replayed, and when replayed online but told every batch in advance
    s = backtest(GB, known, v, SLOTS, actuals, tolerances=exact).strategies
    online = backtest(GB, _batches(), v, SLOTS, actuals, tolerances=exact).strategies
    # Then re-planning hour by hour matches the perfect-knowledge plan
    assert s["rolling"]["regret_co2"] == pytest.approx(0.0, abs=1e-6)
    assert s["rolling"]["unplaced"] == 0
    # And the fair reference (batches known, windows kept) does too on the online night
    assert online["rolling_known"]["regret_co2"] == pytest.approx(0.0, abs=1e-6)
    assert online["rolling_known"]["unplaced"] == 0


def test_a_batch_is_planned_when_it_arrives_within_the_contract_window() -> None:
    # Given a 1-GPU-hour batch submitted at 09:30, due at 11:00
    due = PlanningBatch(
        id="late",
        requests=10,
        input_tokens=GPU_HOUR_TOKENS,
        output_tokens=0.0,
        submitted_at=T0 + timedelta(hours=5, minutes=30),
        deadline=T0 + timedelta(hours=7),
        model="small",
    )
    # When replayed hour by hour
    r = _run([due])
    # Then a re-plan ran when it arrived (as the service's new_batch re-plan), knowing it
    assert [d.batches_known for d in r.decisions if d.at == due.submitted_at] == [1]
    # And it ran whole in the 10:00 slot: never before its submission (the window rule), so
    # the committed plan still checks out on the actuals
    assert r.committed.unplaced == ()
    assert {a.slot for a in r.committed.assignments} == {T0 + 6 * HOUR}
    assert r.validation.ok, r.validation.violations


# ---------------------------------------------------------------- expected arrivals

CYCLE = timedelta(hours=48)  # one night of this scenario (47 slots) and a little more


def _history(cycles: int = 2) -> list[PlanningBatch]:
    # The same night's arrival pattern on earlier days (other ids): what a store would hold
    return [
        dataclasses.replace(
            b, id=f"d{k}-{b.id}", submitted_at=b.submitted_at - k * CYCLE,
            deadline=b.deadline - k * CYCLE,
        )
        for k in range(1, cycles + 1)
        for b in _batches()
    ]  # fmt: skip


def _hedged(batches: list[PlanningBatch], actuals: dict | None = None) -> BacktestResult:
    from scheduler.optimizer.arrivals import ArrivalProfile

    return backtest(
        GB,
        batches,
        _vintages(),
        SLOTS,
        actuals or _actuals(),
        arrivals=ArrivalProfile(CYCLE, 2, 1.0),
        history=_history(),
    )


@pytest.fixture(scope="module")
def hedged() -> BacktestResult:
    return _hedged(_batches())


def test_with_reservations_the_replay_still_never_peeks(hedged: BacktestResult) -> None:
    # When only the actuals change, or the batches after the cut are removed
    other = _hedged(_batches(), _actuals(1.4))
    cut = T0 + timedelta(hours=20)
    fewer = _hedged([b for b in _batches() if b.submitted_at <= cut])
    # Then no decision changes, and none before the cut
    assert other.committed.assignments == hedged.committed.assignments
    assert [a for a in fewer.committed.assignments if a.slot <= cut] == [
        a for a in hedged.committed.assignments if a.slot <= cut
    ]
    # And the committed plan holds only submitted batches and checks out on the actuals
    assert {a.batch for a in hedged.committed.assignments} <= {b.id for b in _batches()}
    assert hedged.validation.ok, hedged.validation.violations


def test_reservations_learned_from_earlier_nights_cut_the_cost_of_arrivals(
    hedged: BacktestResult, result: BacktestResult
) -> None:
    s = hedged.strategies
    # Then the result reports the same replay without reservations (what they bought)
    assert s["rolling_no_reservations"]["co2_g"] == pytest.approx(
        result.strategies["rolling"]["co2_g"]
    )
    # And on this night, whose arrivals repeat the earlier ones, holding capacity for them
    # emits less than re-planning without them
    assert s["rolling"]["co2_g"] < s["rolling_no_reservations"]["co2_g"]
    assert s["rolling"]["unplaced"] == 0
