"""Forecast vintages (contract extension): reader, writer, what is known when, real GB NESO issues."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from optimizer_helpers import NESO, fleet, site

from scheduler.contract import read_forecasts
from scheduler.contract.vintages import ceil_to_slot, read_vintages, write_vintages
from scheduler.errors import InvalidInput
from scheduler.forecasts import uk_archive

GB = fleet([site("gb")])
HEADER = "issued_at,time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw\n"


def _t(day: int, hour: int) -> datetime:
    return datetime(2023, 3, day, hour, tzinfo=UTC)


@pytest.fixture(scope="module")
def neso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five real 48 h GB issues written as one vintages file."""
    rows = uk_archive.vintages(NESO / "fw48h", "gb", 60)
    return write_vintages(rows, tmp_path_factory.mktemp("neso") / "vintages.csv")


def test_real_issues_round_trip_through_the_file(neso: Path, tmp_path: Path) -> None:
    # Given the real issues read back from the vintages file
    v = read_vintages(neso, GB)
    # Then there are five issues, each usable from the slot start after its publication
    assert v.issue_times == (_t(14, 4), _t(15, 2), _t(16, 2), _t(17, 4), _t(18, 1))
    assert all(len(v.issues[i]) == 47 for i in v.issue_times)
    # And writing and reading again gives the same values
    again = read_vintages(write_vintages(v, tmp_path / "again.csv"), GB)
    assert again.issues == v.issues


def test_a_decision_sees_only_issues_published_by_then(neso: Path) -> None:
    # Given the real issues and a decision at 2023-03-15T10:00Z (after the second issue)
    v = read_vintages(neso, GB)
    h = _t(15, 10)
    known = v.known_at(h)
    # Then every value comes from an issue at or before h, the newest one covering its slot
    assert {issued for issued, _ in known.values()} == {_t(14, 4), _t(15, 2)}
    assert known[("gb", _t(15, 12))][0] == _t(15, 2)
    assert known[("gb", _t(15, 12))][1] == v.issues[_t(15, 2)][("gb", _t(15, 12))]
    # And a slot only the first issue reached keeps its value until a newer issue covers it
    assert known[("gb", _t(15, 3))][0] == _t(15, 2)
    assert known[("gb", _t(14, 20))][0] == _t(14, 4)
    # And each signal names its issue itself (a plan made from it records which it used)
    assert all(sig.issued_at == issued for issued, sig in known.values())
    # And nothing issued later leaks in: the third issue's slots beyond the second's horizon
    assert ("gb", _t(17, 3)) not in known
    assert v.vintage_at(h) == _t(15, 2)


def test_a_horizon_no_issue_covers_yet_is_refused_by_name(neso: Path) -> None:
    # Given a decision at 2023-03-14T05:00Z that asks for the signals of 2023-03-16T06:00Z
    v = read_vintages(neso, GB)
    # When/Then it is refused, naming the site, the slot and what to do
    with pytest.raises(InvalidInput, match=r"site gb at slot 2023-03-16T06:00:00Z.*shorten"):
        v.signals_at(_t(14, 5), [_t(14, 5), _t(16, 6)], GB)
    # And before the first issue nothing is known at all
    assert v.known_at(_t(14, 3)) == {}
    assert v.vintage_at(_t(14, 3)) is None


def test_bad_rows_are_all_reported_with_what_to_do(tmp_path: Path) -> None:
    # Given a file with an unaligned issue time, a row before its issue, a duplicate and a good row
    p = tmp_path / "v.csv"
    p.write_text(
        HEADER
        + "2023-03-14T03:31:00Z,2023-03-14T04:00:00Z,gb,100,0,0\n"
        + "2023-03-14T04:00:00Z,2023-03-14T03:00:00Z,gb,100,0,0\n"
        + "2023-03-14T04:00:00Z,2023-03-14T05:00:00Z,gb,100,0,0\n"
        + "2023-03-14T04:00:00Z,2023-03-14T05:00:00Z,gb,101,0,0\n"
    )
    # When read
    with pytest.raises(InvalidInput) as err:
        read_vintages(p, GB)
    # Then each bad line is listed with its own reason
    by_line = {e.line: e.message for e in err.value.errors}
    assert set(by_line) == {2, 3, 5}
    assert "round it UP" in by_line[2]
    assert "before its issued_at" in by_line[3]
    assert "second row issued at" in by_line[5]


def test_a_plain_forecasts_file_is_refused_with_the_missing_column(tmp_path: Path) -> None:
    # Given a plain forecasts file (no issued_at)
    p = tmp_path / "f.csv"
    p.write_text(
        "time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw\n2023-03-14T04:00:00Z,gb,1,0,0\n"
    )
    # Then the vintages reader names the missing column, and the plain reader still reads it
    with pytest.raises(InvalidInput, match="missing column.*issued_at"):
        read_vintages(p, GB)
    slots, signals = read_forecasts(p, GB)
    assert slots == (_t(14, 4),)
    assert signals[("gb", _t(14, 4))].carbon_g_per_kwh == 1.0


def test_real_forecast_error_grows_with_lead_time(neso: Path) -> None:
    # Given the real issues and the measured intensities of the same days
    v = read_vintages(neso, GB)
    measured = {s.time: s.carbon_g_per_kwh for s in uk_archive.actuals(NESO / "pt24h", "gb", 60)}
    err: dict[bool, list[float]] = {True: [], False: []}
    for issued in v.issue_times:
        for (_, t), s in v.issues[issued].items():
            if t in measured:
                err[t - issued >= timedelta(hours=24)].append(
                    abs(s.carbon_g_per_kwh - measured[t]) / measured[t]
                )
    # Then the mean absolute percentage error is larger a day ahead than within the day
    assert len(err[False]) > 100 and len(err[True]) > 50
    assert statistics.mean(err[True]) > statistics.mean(err[False]) > 0.05


def test_issue_times_round_up_to_the_next_slot_start() -> None:
    assert ceil_to_slot(datetime(2023, 3, 14, 3, 31, tzinfo=UTC), 60) == _t(14, 4)
    assert ceil_to_slot(_t(14, 4), 60) == _t(14, 4)
    assert ceil_to_slot(datetime(2023, 3, 14, 23, 59, tzinfo=UTC), 60) == _t(15, 0)
