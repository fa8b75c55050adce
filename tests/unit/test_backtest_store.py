"""``gridshift backtest --store``: a night replayed from the store's own history (SQLite)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from store_night import (
    ISSUES,
    LEDGER_ONLY,
    LEDGER_PRICE,
    SINCE,
    UNTIL,
    seed_night,
    submit,
    write_fleet,
)
from typer.testing import CliRunner

from scheduler.backtest_store import load_store_history
from scheduler.cli import EXIT_USAGE, build_app
from scheduler.config import Settings
from scheduler.contract import build_problem, read_plan
from scheduler.contract.vintages import ceil_to_slot
from scheduler.fleet import load_fleet
from scheduler.optimizer.validate import validate_plan
from scheduler.store.tables import LedgerEntry

WINDOW = ["--since", "2026-11-01T00:00Z", "--until", "2026-11-01T12:00Z"]
HOLD = timedelta(hours=48)


@pytest.fixture
def fleet_path(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The night's fleet as GRIDSHIFT_FLEET, the test store as GRIDSHIFT_DATABASE_URL."""
    path = write_fleet(tmp_path / "conf")
    monkeypatch.setenv("GRIDSHIFT_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("GRIDSHIFT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GRIDSHIFT_FLEET", str(path))
    return path


def _backtest(tmp_path: Path, *extra: str) -> tuple[int, str, Path, Path]:
    out, plan = tmp_path / "result.json", tmp_path / "committed.json"
    run = CliRunner().invoke(
        build_app(),
        ["backtest", "--store", *WINDOW, *extra, "--out", str(out), "--plan-out", str(plan)],
    )
    return run.exit_code, run.output, out, plan


def test_a_stored_night_replays_and_its_committed_plan_reprices_to_its_totals(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fleet_path: Path
) -> None:
    # Given a store that received three batches, kept two forecast issues and knows the actuals
    fleet = load_fleet(fleet_path)
    seed_night(sessions, settings, fleet, tmp_path)
    # When the night is backtested from the store
    code, output, out, plan_path = _backtest(tmp_path)
    # Then it succeeds and reports every strategy, on the store's batches and both issues
    assert code == 0, output
    assert "perfect knowledge" in output and "forecast vintages" in output
    result = json.loads(out.read_text())
    assert set(result["strategies"]) >= {"rolling", "rolling_known", "bound", "first_vintage"}
    assert result["committed_check"]["ok"], result["committed_check"]
    inputs = result["inputs"]
    assert inputs["source"] == "store" and inputs["batches"] == 3
    assert inputs["vintages"] >= 2
    used = {d["vintage"] for d in result["decisions"]}
    assert {f"{ceil_to_slot(f, 60):%Y-%m-%dT%H:%M:%SZ}" for f, _ in ISSUES} <= used
    # And the actuals came from the cached actual points and, where only it knew, the ledger
    assert inputs["actual_sources"]["carbon"] == {"actual": 34, "ledger": len(LEDGER_ONLY)}
    assert inputs["actual_sources"]["price"] == {"forecast": 34, "ledger": len(LEDGER_ONLY)}
    # And the committed plan, re-priced independently on the store's actuals, gives its totals
    with sessions() as s:
        history = load_store_history(s, fleet, SINCE, UNTIL, hold=HOLD)
    assert history.actuals[LEDGER_ONLY[0]].price_per_kwh == pytest.approx(LEDGER_PRICE)
    committed = read_plan(plan_path)
    assert committed.unplaced == () and len(committed.assignments) > 0
    problem = build_problem(
        history.fleet, list(history.actual_slots), history.actuals, history.batches
    )
    report = validate_plan(problem, committed)
    assert report.ok, report.violations
    assert report.totals.co2_g == pytest.approx(result["strategies"]["rolling"]["co2_g"], rel=1e-9)
    assert committed.totals.co2_g == pytest.approx(report.totals.co2_g, rel=1e-9)


def test_other_tolerances_are_replayed_on_the_same_night_with_the_stores_arrival_history(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fleet_path: Path
) -> None:
    # Given the stored night, and a batch the store received the evening before
    fleet = load_fleet(fleet_path)
    seed_night(sessions, settings, fleet, tmp_path)
    submit(sessions, settings, fleet, SINCE - timedelta(hours=20), 10, tmp_path)
    # When replayed with no slack on any stage
    code, output, out, plan_path = _backtest(tmp_path, "--tolerances", "0,0,0")
    # Then the committed plan was made with those tolerances
    assert code == 0, output
    assert read_plan(plan_path).tolerances == (0.0, 0.0, 0.0)
    # And the earlier batch is not replayed but is what the arrival profile learned from
    inputs = json.loads(out.read_text())["inputs"]
    assert (inputs["batches"], inputs["history_batches"]) == (3, 1)


def test_a_window_without_forecast_issues_is_refused_saying_what_to_do(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fleet_path: Path
) -> None:
    # Given a store that received batches but kept no forecast issue (e.g. before 0008)
    seed_night(sessions, settings, load_fleet(fleet_path), tmp_path, issues=False)
    # When backtested
    code, output, out, _ = _backtest(tmp_path)
    # Then it is refused as bad input, naming the table and the alternatives
    assert code == EXIT_USAGE
    assert "no forecast issues" in output and "forecast_issues" in output
    assert "--vintages" in output and not out.exists()


def test_missing_actuals_are_listed_by_site_and_slot(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fleet_path: Path
) -> None:
    # Given the night without the ledger rows that alone knew two of west's slots
    seed_night(sessions, settings, load_fleet(fleet_path), tmp_path)
    with sessions() as s, s.begin():
        s.execute(delete(LedgerEntry))
    # When backtested
    code, output, _, _ = _backtest(tmp_path)
    # Then both pairs are named
    assert code == EXIT_USAGE
    flat = " ".join(output.split())
    assert "2 (site, slot) pair(s)" in flat
    assert "west 2026-11-01T04:00:00Z" in flat and "west 2026-11-01T05:00:00Z" in flat


def test_store_and_file_options_do_not_mix(tmp_path: Path, fleet_path: Path) -> None:
    mixed = CliRunner().invoke(
        build_app(),
        ["backtest", "--store", *WINDOW, "--batches", "b.jsonl"]
        + ["--out", str(tmp_path / "r.json"), "--plan-out", str(tmp_path / "c.json")],
    )
    assert mixed.exit_code == EXIT_USAGE and "cannot take --batches" in mixed.output
    with_history = CliRunner().invoke(
        build_app(),
        ["backtest", "--store", *WINDOW, "--history", "h.jsonl"]
        + ["--out", str(tmp_path / "r.json"), "--plan-out", str(tmp_path / "c.json")],
    )
    assert with_history.exit_code == EXIT_USAGE and "--history" in with_history.output
    no_window = CliRunner().invoke(
        build_app(),
        ["backtest", "--store", "--out", str(tmp_path / "r.json")]
        + ["--plan-out", str(tmp_path / "c.json")],
    )
    assert no_window.exit_code == EXIT_USAGE and "--since and --until" in no_window.output
    files_with_window = CliRunner().invoke(
        build_app(),
        ["backtest", "--fleet", str(fleet_path), *WINDOW]
        + ["--out", str(tmp_path / "r.json"), "--plan-out", str(tmp_path / "c.json")],
    )
    assert files_with_window.exit_code == EXIT_USAGE and "add --store" in files_with_window.output


def test_issues_count_from_the_next_slot_start_and_keep_their_exact_fetch_time(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, fleet_path: Path
) -> None:
    # Given the night's two fetches (23:50 the day before, 03:20)
    fleet = load_fleet(fleet_path)
    seed_night(sessions, settings, fleet, tmp_path)
    with sessions() as s:
        vintages = load_store_history(s, fleet, SINCE, UNTIL, hold=HOLD).vintages
    (first, _), (second, _) = ISSUES
    # Then each is usable from the slot start after it was fetched
    assert vintages.issue_times == (SINCE, SINCE + timedelta(hours=4))
    # And a decision before the second sees only the first, with its fetch time
    slot = ("north", SINCE + timedelta(hours=6))
    before, after = (
        vintages.known_at(SINCE + timedelta(hours=3)),
        vintages.known_at(SINCE + timedelta(hours=4)),
    )
    assert before[slot][1].issued_at == first and after[slot][1].issued_at == second
    assert before[slot][1].carbon_g_per_kwh != after[slot][1].carbon_g_per_kwh
    # And the tariff fetched as one point holds over the horizon, to the window's last slot
    assert after[("west", UNTIL - timedelta(hours=1))][1].price_per_kwh == 0.2


def test_issues_cached_under_another_provider_for_the_site_are_found(
    sessions: sessionmaker[Session], fleet_path: Path
) -> None:
    from scheduler.forecasts import FORECAST, SqlForecastCache
    from scheduler.forecasts.history import store_issues

    # Given issues cached the way the demo caches them: provider "demo", key = the site name
    fleet = load_fleet(fleet_path)
    cache = SqlForecastCache(sessions)
    hours = {SINCE + timedelta(hours=i): 100.0 + i for i in range(12)}
    for site in fleet.sites:
        cache.upsert("demo", site.name, "carbon", FORECAST, hours, SINCE)
        cache.upsert("demo", site.name, "price", FORECAST, dict.fromkeys(hours, 0.1), SINCE)
    # When the window's issues are read for a fleet configuring other providers
    with sessions() as s:
        history = store_issues(s, fleet, SINCE, UNTIL, hold=HOLD)
    # Then the demo's issue is the one vintage, with its values
    assert history.vintages.issue_times == (SINCE,)
    signal = history.vintages.issues[SINCE][("south", SINCE + timedelta(hours=3))]
    assert (signal.carbon_g_per_kwh, signal.price_per_kwh) == (103.0, 0.1)
