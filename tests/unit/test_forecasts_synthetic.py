"""SYNTHETIC sample signals: complete, deterministic, labelled, with plausible daily shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.forecasts.csv import write_forecasts_csv
from scheduler.forecasts.synthetic import synthetic_signals
from scheduler.samples import load_sample_fleet, sample_fleet_path

MIDSUMMER = datetime(2026, 6, 21, tzinfo=UTC)


def test_sample_fleet_loads_with_cpu_pools_on_the_transformers_engine():
    fleet = load_sample_fleet()
    assert sample_fleet_path().is_file()
    assert [s.name for s in fleet.sites] == ["gb-london", "de-frankfurt", "es-madrid"]
    for site in fleet.sites:
        for pool in site.pools:
            assert pool.gpu == "CPU" and pool.engine.kind == "transformers"
    assert all({"CPU", "H100"} <= set(m.profiles) for m in fleet.models)


def test_synthetic_signals_cover_every_site_and_slot_and_are_labelled():
    fleet = load_sample_fleet()
    signals = synthetic_signals(fleet, MIDSUMMER + timedelta(minutes=20), 48)
    slots = sorted({t for _, t in signals})
    assert len(slots) == 48 and slots[0] == MIDSUMMER
    assert set(signals) == {(s.name, t) for s in fleet.sites for t in slots}
    assert all(s.source == "synthetic" for s in signals.values())
    assert all(s.carbon_g_per_kwh > 0 and s.renewable_kw >= 0 for s in signals.values())


def test_synthetic_signals_are_deterministic_and_window_independent():
    fleet = load_sample_fleet()
    a = synthetic_signals(fleet, MIDSUMMER, 24)
    b = synthetic_signals(fleet, MIDSUMMER + timedelta(hours=12), 24)
    c = synthetic_signals(fleet, MIDSUMMER, 24, seed=7)
    overlap = [k for k in a if k in b]
    assert overlap and all(a[k] == b[k] for k in overlap)
    assert a == synthetic_signals(fleet, MIDSUMMER, 24)
    assert any(a[k].carbon_g_per_kwh != c[k].carbon_g_per_kwh for k in a)


def test_synthetic_shapes_have_a_solar_bell_and_an_evening_carbon_peak():
    fleet = load_sample_fleet()
    signals = synthetic_signals(fleet, MIDSUMMER, 24)

    def at(site: str, hour: int):
        return signals[(site, MIDSUMMER + timedelta(hours=hour))]

    assert at("es-madrid", 1).renewable_kw == 0.0
    assert at("es-madrid", 12).renewable_kw > at("es-madrid", 8).renewable_kw > 0
    assert at("gb-london", 12).renewable_kw == 0.0  # no array configured
    for site in ("gb-london", "de-frankfurt", "es-madrid"):
        assert at(site, 18).carbon_g_per_kwh > at(site, 12).carbon_g_per_kwh
        assert at(site, 18).price_per_kwh > at(site, 12).price_per_kwh


def test_synthetic_signals_write_a_contract_forecasts_csv(tmp_path):
    fleet = load_sample_fleet()
    path = write_forecasts_csv(synthetic_signals(fleet, MIDSUMMER, 2).values(), tmp_path / "f.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw"
    assert len(lines) == 1 + 2 * 3
    assert lines[1].startswith("2026-06-21T00:00:00Z,")
