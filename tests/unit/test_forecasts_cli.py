"""``gridshift forecasts`` writes a contract forecasts.csv that the file planner reads back."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli import build_app
from scheduler.contract import read_forecasts
from scheduler.fleet import load_fleet
from scheduler.samples import load_sample_fleet


def test_synthetic_forecasts_for_the_sample_fleet_are_a_valid_contract_file(tmp_path: Path):
    # Given the sample fleet
    out = tmp_path / "forecasts.csv"
    # When synthetic forecasts are written for 12 hours
    result = CliRunner().invoke(
        build_app(),
        [
            "forecasts",
            "--out",
            str(out),
            "--hours",
            "12",
            "--start",
            "2026-11-22T00:00:00Z",
            "--synthetic",
        ],
    )
    # Then the contract reader accepts them: every site, every slot, labelled synthetic
    assert result.exit_code == 0, result.output
    slots, signals = read_forecasts(out, load_sample_fleet())
    assert len(slots) == 12 and len(signals) == 12 * 3
    assert "synthetic" in out.read_text().splitlines()[1]


def test_forecasts_from_csv_sources_and_a_missing_source_exit_codes(tmp_path: Path):
    # Given a fleet whose site reads carbon from a CSV that covers only one of two slots
    (tmp_path / "carbon.csv").write_text("time,value\n2026-11-22T00:00:00Z,123\n")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "slot_minutes: 60\n"
        "sites:\n"
        "  - name: x\n"
        "    signals:\n"
        "      carbon: {provider: csv, path: carbon.csv, column: value}\n"
        "      price: {provider: constant, value: 0.1}\n"
        "    pools: [{name: p, gpu: CPU, count: 1}]\n"
        "models: [{name: m, profiles: {CPU: {prefill_tok_s: 1, decode_tok_s: 1, power_w: 1}}}]\n"
    )
    load_fleet(fleet)
    runner = CliRunner()
    args = ["forecasts", "--fleet", str(fleet), "--start", "2026-11-22T00:00:00Z"]
    # When one slot is asked for, it is written; when two, the gap cannot be filled
    ok = runner.invoke(build_app(), [*args, "--hours", "1", "--out", str(tmp_path / "a.csv")])
    bad = runner.invoke(build_app(), [*args, "--hours", "2", "--out", str(tmp_path / "b.csv")])
    # Then the first succeeds and the second fails with exit 1 naming the site and signal
    assert ok.exit_code == 0, ok.output
    assert "x,123.0,0.1" in (tmp_path / "a.csv").read_text()
    assert bad.exit_code == 1
    assert "site x" in bad.output and "carbon" in bad.output
