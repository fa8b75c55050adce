"""``gridshift plan`` as a subprocess on files; every plan it writes is re-priced independently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import write_scenario
from scheduler.commands.planning import load_problem
from scheduler.contract import read_plan
from scheduler.optimizer.validate import validate_plan

pytestmark = pytest.mark.integration

# shared/examples/planning/README.md: stage-1 optimum of the relaxation, carbon first.
TINY_CARBON_OPTIMUM_G = 875.860


def _gridshift(*args: str | Path, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("gridshift")
    command = (
        [str(script)]
        if script.exists()
        else [
            sys.executable,
            "-c",
            "from scheduler.cli import main; main()",
        ]
    )
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _inputs(folder: Path) -> list[str | Path]:
    return [
        "--fleet",
        folder / "fleet.yaml",
        "--forecasts",
        folder / "forecasts.csv",
        "--batches",
        folder / "batches.jsonl",
    ]


def test_plan_on_the_tiny_example_is_valid_and_reaches_the_known_optimum(
    shared_dir: Path, tmp_path: Path
) -> None:
    # Given the tiny example with a carbon-first order and no slack
    tiny = shared_dir / "examples" / "planning" / "tiny"
    out = tmp_path / "plan.json"
    # When gridshift plans it
    result = _gridshift(
        "plan",
        *_inputs(tiny),
        "--objectives",
        "carbon,cost,delay",
        "--tolerances",
        "0,0,0",
        "--out",
        out,
    )
    # Then it exits 0, says so, and the plan re-prices with zero violations
    assert result.returncode == 0, result.stderr
    assert "status: optimal" in result.stdout and "asap" in result.stdout
    problem = load_problem(
        tiny / "fleet.yaml",
        tiny / "forecasts.csv",
        tiny / "batches.jsonl",
        "carbon,cost,delay",
        "0,0,0",
    )
    plan = read_plan(out)
    report = validate_plan(problem, plan)
    assert report.ok, report.violations
    # And whole requests cost at most 0.5 % over the relaxation's optimum, never below it
    assert report.totals.co2_g >= TINY_CARBON_OPTIMUM_G * (1 - 1e-4)
    assert report.totals.co2_g <= TINY_CARBON_OPTIMUM_G * 1.005
    assert set(plan.baselines) == {"asap", "carbon_greedy"}


def test_plan_on_a_real_trace_scenario_is_valid_and_beats_both_baselines_on_carbon(
    shared_dir: Path, tmp_path: Path
) -> None:
    # Given 5 sites, 24 hourly slots of real carbon, price, water and solar, and 60 batches
    scenario = write_scenario(shared_dir, tmp_path / "scenario", batches=60, sites=5, hours=24)
    out = tmp_path / "plan.json"
    # When gridshift plans it carbon first
    result = _gridshift(
        "plan",
        *_inputs(tmp_path / "scenario"),
        "--objectives",
        "carbon,cost,delay",
        "--tolerances",
        "0.01,0,0",
        "--out",
        out,
    )
    # Then the plan keeps every rule of the contract when re-priced independently
    assert result.returncode == 0, result.stderr
    problem = load_problem(
        scenario.fleet, scenario.forecasts, scenario.batches, "carbon,cost,delay", "0.01,0,0"
    )
    plan = read_plan(out)
    report = validate_plan(problem, plan)
    assert report.ok, report.violations
    # And it emits less CO2 than either baseline while placing at least as many batches
    for name, baseline in plan.baselines.items():
        assert report.totals.co2_g < baseline.co2_g, name
        assert len(plan.unplaced) <= baseline.unplaced, name


def test_check_mode_accepts_a_valid_plan_and_rejects_a_tampered_one(
    shared_dir: Path, tmp_path: Path
) -> None:
    # Given a plan of the tiny example written by gridshift
    tiny = shared_dir / "examples" / "planning" / "tiny"
    good = tmp_path / "plan.json"
    assert _gridshift("plan", *_inputs(tiny), "--out", good).returncode == 0
    # When it is checked, Then it passes
    ok = _gridshift("plan", *_inputs(tiny), "--check", good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "re-pricing: ok" in ok.stdout
    # When one assignment is moved to a slot before anything was submitted
    raw = json.loads(good.read_text())
    raw["assignments"][0]["slot"] = "2023-06-12T00:00:00Z"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    checked = _gridshift("plan", *_inputs(tiny), "--check", bad)
    # Then the check fails and names the window
    assert checked.returncode == 1
    assert "window" in checked.stdout


def test_bad_input_exits_2_with_the_line_number(shared_dir: Path, tmp_path: Path) -> None:
    # Given a batches file whose third line has both model and min_quality
    tiny = shared_dir / "examples" / "planning" / "tiny"
    lines = (tiny / "batches.jsonl").read_text().splitlines()[:3]
    third = json.loads(lines[2])
    third.update(model="llama-3.1-8b-instruct", min_quality=0.5)
    lines[2] = json.dumps(third)
    batches = tmp_path / "batches.jsonl"
    batches.write_text("\n".join(lines) + "\n")
    # When planned
    result = _gridshift(
        "plan",
        "--fleet",
        tiny / "fleet.yaml",
        "--forecasts",
        tiny / "forecasts.csv",
        "--batches",
        batches,
    )
    # Then it exits 2 and says which line and why
    assert result.returncode == 2
    assert "line 3" in result.stderr and "exactly one of 'model' or 'min_quality'" in result.stderr


def test_a_plan_that_can_place_nothing_exits_1(shared_dir: Path, tmp_path: Path) -> None:
    # Given one batch submitted after the forecasts' horizon ends
    tiny = shared_dir / "examples" / "planning" / "tiny"
    batches = tmp_path / "batches.jsonl"
    batches.write_text(
        json.dumps(
            {
                "id": "late",
                "model": "llama-3.1-8b-instruct",
                "requests": 10,
                "input_tokens": 1000,
                "output_tokens": 100,
                "submitted_at": "2023-06-20T00:00:00Z",
                "deadline": "2023-06-21T00:00:00Z",
            }
        )
        + "\n"
    )
    out = tmp_path / "plan.json"
    # When planned
    result = _gridshift(
        "plan",
        "--fleet",
        tiny / "fleet.yaml",
        "--forecasts",
        tiny / "forecasts.csv",
        "--batches",
        batches,
        "--out",
        out,
    )
    # Then the status is infeasible, the batch is listed with a reason, and the exit code is 1
    assert result.returncode == 1, result.stdout + result.stderr
    plan = json.loads(out.read_text())
    assert plan["status"] == "infeasible"
    assert [u["batch"] for u in plan["unplaced"]] == ["late"]
    assert plan["unplaced"][0]["reason"]
