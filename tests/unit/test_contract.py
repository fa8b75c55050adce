"""Reading the planning contract's files: forecasts, batches, problem and plan.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.contract import (
    build_problem,
    plan_to_json,
    read_batches,
    read_forecasts,
    read_plan,
    write_plan,
)
from scheduler.domain import (
    Assignment,
    BaselineTotals,
    Fleet,
    Objective,
    Plan,
    PlanStatus,
    PlanTotals,
    Unplaced,
)
from scheduler.errors import InvalidInput
from scheduler.fleet import parse_fleet

HEADER = "time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw"


def _fleet(slot_minutes: int = 60) -> Fleet:
    return parse_fleet(
        {
            "slot_minutes": slot_minutes,
            "sites": [
                {"name": "a", "pue": 1.1, "pools": [{"name": "p", "gpu": "H100", "count": 2}]},
                {
                    "name": "b",
                    "pue": 1.2,
                    "wue_l_per_kwh": 0.5,
                    "pools": [{"name": "p", "gpu": "H100", "count": 2}],
                },
            ],
            "models": [
                {
                    "name": "small",
                    "quality": 0.5,
                    "profiles": {
                        "H100": {
                            "gpus": 1,
                            "prefill_tok_s": 1000,
                            "decode_tok_s": 100,
                            "power_w": 500,
                        }
                    },
                },
            ],
        }
    )


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _batch_line(**overrides: object) -> str:
    raw: dict[str, object] = {
        "id": "b1",
        "model": "small",
        "requests": 10,
        "input_tokens": 1000,
        "output_tokens": 500,
        "submitted_at": "2026-11-22T00:10:00Z",
        "deadline": "2026-11-22T06:00:00Z",
    }
    raw.update(overrides)
    return json.dumps({k: v for k, v in raw.items() if v is not None})


def test_forecasts_give_every_slot_of_the_span_and_the_optional_wue_override(
    tmp_path: Path,
) -> None:
    # Given two sites over two hourly slots, one row carrying a WUE override and an extra column
    path = _write(
        tmp_path,
        "f.csv",
        [
            HEADER + ",wue_l_per_kwh,comment",
            "2026-11-22T00:00:00Z,a,300,0.1,0,,x",
            "2026-11-22T00:00:00Z,b,100,0.2,5,0.9,y",
            "2026-11-22T01:00:00Z,a,310,0.1,0,,",
            "2026-11-22T01:00:00Z,b,90,-0.01,5,,",
        ],
    )
    # When it is read
    slots, signals = read_forecasts(path, _fleet())
    # Then the horizon is its span, in UTC, and the override applies to its row only
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    assert slots == (t0, t0.replace(hour=1))
    assert signals[("b", t0)].wue_l_per_kwh == 0.9
    assert signals[("b", t0.replace(hour=1))].wue_l_per_kwh is None
    assert signals[("b", t0.replace(hour=1))].price_per_kwh == -0.01


def test_forecasts_with_a_gap_are_refused_naming_the_first_missing_site_and_slot(
    tmp_path: Path,
) -> None:
    # Given site b has no row for the 01:00 slot
    path = _write(
        tmp_path,
        "f.csv",
        [
            HEADER,
            "2026-11-22T00:00:00Z,a,300,0.1,0",
            "2026-11-22T00:00:00Z,b,100,0.2,0",
            "2026-11-22T01:00:00Z,a,300,0.1,0",
            "2026-11-22T02:00:00Z,a,300,0.1,0",
            "2026-11-22T02:00:00Z,b,300,0.1,0",
        ],
    )
    # When it is read, Then the message names b and 01:00
    with pytest.raises(InvalidInput, match=r"site b at slot 2026-11-22T01:00:00Z"):
        read_forecasts(path, _fleet())


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("2026-11-22T00:30:00Z,a,300,0.1,0", "not a slot start"),
        ("2026-11-22T00:00:00Z,zz,300,0.1,0", "unknown site 'zz'"),
        ("2026-11-22T00:00:00Z,a,lots,0.1,0", "carbon_g_per_kwh must be a number"),
        ("2026-11-22T00:00:00,a,300,0.1,0", "no time zone"),
    ],
)
def test_a_bad_forecast_row_is_refused_with_its_line_number(
    tmp_path: Path, row: str, fragment: str
) -> None:
    # Given a valid first row and a bad second data row (file line 3)
    path = _write(tmp_path, "f.csv", [HEADER, "2026-11-22T00:00:00Z,b,300,0.1,0", row])
    # When it is read, Then the error names line 3 and the problem
    with pytest.raises(InvalidInput) as info:
        read_forecasts(path, _fleet())
    assert info.value.errors[0].line == 3
    assert fragment in info.value.errors[0].message


def test_forecasts_without_a_required_column_are_refused(tmp_path: Path) -> None:
    # Given a header lacking renewable_kw
    path = _write(tmp_path, "f.csv", ["time,site,carbon_g_per_kwh,price_per_kwh"])
    # When read, Then the missing column is named
    with pytest.raises(InvalidInput, match="renewable_kw"):
        read_forecasts(path, _fleet())


def test_batches_are_read_with_defaults_and_extra_fields_ignored(tmp_path: Path) -> None:
    # Given one model batch with an unknown field and one min_quality batch with residency
    path = _write(
        tmp_path,
        "b.jsonl",
        [
            _batch_line(colour="blue"),
            "",
            _batch_line(id="b2", model=None, min_quality=0.4, sites=["a"], priority=2.5),
        ],
    )
    # When read
    batches = read_batches(path)
    # Then both come back typed, times in UTC
    assert [b.id for b in batches] == ["b1", "b2"]
    assert batches[0].priority == 1.0 and batches[0].sites is None
    assert batches[1].min_quality == 0.4 and batches[1].model is None
    assert batches[1].sites == ("a",) and batches[1].priority == 2.5
    assert batches[0].submitted_at == datetime(2026, 11, 22, 0, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (_batch_line(min_quality=0.5), "exactly one of 'model' or 'min_quality', not both"),
        (_batch_line(model=None), "not neither"),
        (_batch_line(requests=None), "missing required field 'requests'"),
        (_batch_line(requests=2.5), "whole number"),
        (_batch_line(input_tokens="many"), "input_tokens must be a number"),
        (_batch_line(deadline="2026-11-22T00:00:00Z"), "deadline must be after submitted_at"),
        (_batch_line(sites="a"), "sites must be a non-empty list"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not JSON"),
    ],
)
def test_a_bad_batch_line_is_refused_with_its_line_number(
    tmp_path: Path, line: str, fragment: str
) -> None:
    # Given a good first line and a bad second line
    path = _write(tmp_path, "b.jsonl", [_batch_line(id="ok"), line])
    # When read, Then the error is on line 2 and says what is wrong
    with pytest.raises(InvalidInput) as info:
        read_batches(path)
    assert [e.line for e in info.value.errors] == [2]
    assert fragment in info.value.errors[0].message


def test_every_bad_line_is_reported_not_only_the_first(tmp_path: Path) -> None:
    # Given two bad lines among good ones, and a repeated id
    path = _write(
        tmp_path,
        "b.jsonl",
        [
            _batch_line(),
            _batch_line(id="x", model=None),
            _batch_line(id="y"),
            "oops",
            _batch_line(),
        ],
    )
    # When read, Then lines 2, 4 and 5 are reported
    with pytest.raises(InvalidInput) as info:
        read_batches(path)
    assert [e.line for e in info.value.errors] == [2, 4, 5]


def test_a_problem_naming_an_unknown_model_or_site_is_refused(tmp_path: Path) -> None:
    # Given batches that name a model and a site the fleet lacks
    fleet = _fleet()
    fpath = _write(
        tmp_path, "f.csv", [HEADER, "2026-11-22T00:00:00Z,a,1,1,0", "2026-11-22T00:00:00Z,b,1,1,0"]
    )
    slots, signals = read_forecasts(fpath, fleet)
    batches = read_batches(
        _write(
            tmp_path,
            "b.jsonl",
            [
                _batch_line(model="huge"),
                _batch_line(id="b2", sites=["mars"]),
            ],
        )
    )
    # When the problem is built, Then both are named
    with pytest.raises(InvalidInput) as info:
        build_problem(fleet, slots, signals, batches)
    assert {e.code for e in info.value.errors} == {"unknown_model", "unknown_site"}


def test_tolerances_shorter_than_objectives_are_padded_with_zero(tmp_path: Path) -> None:
    # Given a fleet and one slot
    fleet = _fleet()
    fpath = _write(
        tmp_path, "f.csv", [HEADER, "2026-11-22T00:00:00Z,a,1,1,0", "2026-11-22T00:00:00Z,b,1,1,0"]
    )
    slots, signals = read_forecasts(fpath, fleet)
    # When built with one tolerance for three objectives
    problem = build_problem(
        fleet, slots, signals, [], [Objective.COST, Objective.CARBON, Objective.DELAY], [0.05]
    )
    # Then the others are zero
    assert problem.tolerances == (0.05, 0.0, 0.0)
    assert problem.objectives[0] is Objective.COST


def test_plan_json_round_trips_with_every_contract_field(tmp_path: Path) -> None:
    # Given a plan with one assignment, one unplaced batch and both baselines
    slot = datetime(2026, 11, 22, 2, tzinfo=UTC)
    plan = Plan(
        status=PlanStatus.OPTIMAL,
        objectives=(Objective.CARBON, Objective.COST, Objective.DELAY),
        tolerances=(0.01, 0.0, 0.0),
        totals=PlanTotals(
            co2_g=3.0,
            operational_co2_g=2.0,
            embodied_co2_g=1.0,
            cost=0.5,
            water_l=0.2,
            energy_kwh=1.5,
            grid_kwh=1.0,
            delay_h=2.0,
        ),
        assignments=(Assignment("b1", "a", "p", "small", slot, 4, 400.0, 200.0, 0.5, 0.3),),
        unplaced=(Unplaced("b2", "no slot before its deadline"),),
        baselines={
            "asap": BaselineTotals(9.0, 1.0, 1.0, 1.0, 0, 2),
            "carbon_greedy": BaselineTotals(5.0, 1.0, 1.0, 3.0, 1, 0),
        },
        solve_s=0.25,
        stage_optima={"carbon": 3.0},
    )
    # When written and read back
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    raw = json.loads(path.read_text())
    # Then the file has the contract's keys and formats, and reads back equal
    assert set(raw) >= {
        "status",
        "objectives",
        "tolerances",
        "totals",
        "assignments",
        "unplaced",
        "baselines",
        "solve_s",
    }
    assert set(raw["totals"]) == {
        "co2_g",
        "operational_co2_g",
        "embodied_co2_g",
        "cost",
        "water_l",
        "energy_kwh",
        "grid_kwh",
        "delay_h",
    }
    assert raw["assignments"][0]["slot"] == "2026-11-22T02:00:00Z"
    assert set(raw["baselines"]["asap"]) >= {"co2_g", "cost", "water_l", "delay_h", "unplaced"}
    assert read_plan(path) == plan
    assert plan_to_json(read_plan(path)) == raw


def test_a_plan_file_missing_a_field_is_refused(tmp_path: Path) -> None:
    # Given a plan.json without status
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"objectives": ["carbon"], "assignments": []}))
    # When read, Then it says it is not a contract plan
    with pytest.raises(InvalidInput, match="not a plan.json"):
        read_plan(path)
