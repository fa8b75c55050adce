"""Emissions reports: CodeCarbon CSV, GHG scope 2 and ESRS E1 totals equal the ledger's sums."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.errors import InvalidInput
from scheduler.review.batch_review import asap_counterfactual
from scheduler.review.budget_view import budget_state
from scheduler.review.reports import (
    CODECARBON_COLUMNS,
    GRIDSHIFT_COLUMNS,
    codecarbon_csv,
    emissions_totals,
    esrs_e1_summary,
    ledger_entries,
    render_report,
)
from scheduler.store.tables import ForecastPoint, LedgerEntry, Tenant

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def _row(
    i: int, *, method: str = "measured-nvml", market: float | None = 0.1, tenant: str = "t1"
) -> LedgerEntry:
    # Irregular values so that float sums depend on getting every row right.
    it = 0.1 + 0.0137 * i + 1e-9 * i * i
    facility = it * 1.17
    grid = facility * (0.8 if i % 3 else 1.0)
    return LedgerEntry(
        id=i + 1,
        batch_id=f"batch_{i % 2}",
        shard_id=f"shard_{i}",
        attempt=1,
        tenant_id=tenant,
        site="de-frankfurt" if i % 2 else "se-lulea",
        pool="h100",
        model="llama-3.1-8b-instruct",
        started_at=T0 + timedelta(minutes=37 * i),
        ended_at=T0 + timedelta(minutes=37 * i + 11.5),
        requests_done=10 + i,
        requests_failed=i % 2,
        input_tokens=1000 * i,
        output_tokens=700 * i,
        gpu_hours=it / 0.55,
        it_energy_kwh=it,
        facility_energy_kwh=facility,
        energy_method=method,
        renewable_share=1 - grid / facility,
        grid_kwh=grid,
        carbon_g_per_kwh=310.3 - i,
        carbon_source="forecast",
        co2_location_g=grid * (310.3 - i),
        co2_market_g=None if market is None else grid * 35.0 + market * i,
        embodied_co2_g=25.0 * it / 0.55,
        water_onsite_l=it * 0.4,
        water_offsite_l=grid * 1.9,
        cost=grid * 0.142,
        planned_energy_kwh=facility * 0.97,
        planned_co2_g=grid * 300.0,
        planned_water_l=None,
        planned_cost=None,
        created_at=T0 + timedelta(minutes=37 * i + 12),
    )


@pytest.fixture
def rows() -> list[LedgerEntry]:
    return [
        _row(
            i, method="estimated" if i % 4 == 0 else "measured-nvml", market=None if i == 5 else 0.1
        )
        for i in range(12)
    ]


def test_codecarbon_csv_opens_with_pandas_with_codecarbon_columns_first(
    rows: list[LedgerEntry],
) -> None:
    # Given ledger rows
    # When they are rendered as emissions.csv and read back with pandas
    df = pd.read_csv(io.StringIO(codecarbon_csv(rows)))
    # Then CodeCarbon's columns come first, in its order, then gridshift's, one row per entry
    assert tuple(df.columns[: len(CODECARBON_COLUMNS)]) == CODECARBON_COLUMNS
    assert tuple(df.columns[len(CODECARBON_COLUMNS) :]) == GRIDSHIFT_COLUMNS
    assert len(df) == len(rows)
    # and the units are CodeCarbon's: kg CO2eq, seconds, kWh, kg/s
    first = rows[0]
    assert df.loc[0, "emissions"] == pytest.approx(first.co2_location_g / 1000.0, rel=1e-12)
    assert df.loc[0, "duration"] == pytest.approx(11.5 * 60)
    assert df.loc[0, "energy_consumed"] == pytest.approx(first.facility_energy_kwh, rel=1e-12)
    assert df.loc[0, "emissions_rate"] == pytest.approx(df.loc[0, "emissions"] / (11.5 * 60))
    assert df.loc[0, "pue"] == pytest.approx(1.17)


def test_report_totals_equal_the_ledger_sums_exactly(rows: list[LedgerEntry]) -> None:
    # Given ledger rows
    # When the CSV and the JSON report are rendered
    df = pd.read_csv(io.StringIO(codecarbon_csv(rows)))
    body = json.loads(render_report(rows, "json", T0, T1)[0])
    # Then every total is the ledger's sum, to the last bit
    totals = body["totals"]
    assert totals["scope2_location_g"] == math.fsum(r.co2_location_g for r in rows)
    assert totals["facility_energy_kwh"] == math.fsum(r.facility_energy_kwh for r in rows)
    assert totals["cost"] == math.fsum(r.cost for r in rows)
    assert totals["embodied_co2_g"] == math.fsum(r.embodied_co2_g for r in rows)
    assert math.fsum(df["co2_location_g"]) == totals["scope2_location_g"]
    assert math.fsum(df["facility_energy_kwh"]) == totals["facility_energy_kwh"]
    assert math.fsum(df["water_onsite_l"]) == math.fsum(r.water_onsite_l for r in rows)
    # and the JSON carries one row per ledger entry
    assert [r["id"] for r in body["rows"]] == [r.id for r in rows]


def test_market_based_scope2_falls_back_to_location_based_where_no_contract(
    rows: list[LedgerEntry],
) -> None:
    # Given one row without a market-based figure
    # When the scope 2 totals are computed
    totals = emissions_totals(rows)
    # Then that row counts at its location-based figure, and is counted as a fallback
    expected = math.fsum(
        r.co2_market_g if r.co2_market_g is not None else r.co2_location_g for r in rows
    )
    assert totals.scope2_market_g == expected
    assert totals.market_fallback_rows == 1
    assert totals.scope2_market_g < totals.scope2_location_g


def test_a_partly_covered_row_without_residual_mix_counts_as_a_partial_location_fallback(
    rows: list[LedgerEntry],
) -> None:
    # Given rows whose market-based figure rests on different bases
    bases = ["instruments", "instruments+location", "instruments+residual", "instruments+location"]
    for r, basis in zip(rows, bases, strict=False):
        r.market_basis = basis
    with_market = [r for r in rows[:4] if r.co2_market_g is not None]
    expected = sum(1 for r in with_market if r.market_basis == "instruments+location")
    assert expected >= 1
    # When the reports are rendered
    totals = emissions_totals(rows)
    esrs = json.loads(render_report(rows, "esrs", T0, T1)[0])
    body = json.loads(render_report(rows, "json", T0, T1)[0])
    # Then the partial fallbacks are counted apart from the rows with no market figure
    assert totals.market_partial_fallback_rows == expected
    assert esrs["ghg_scope_2"]["market_based_partial_fallback_rows"] == expected
    assert body["ghg_scope_2"]["market_based_fallback_rows"] == totals.market_fallback_rows
    assert body["rows"][1]["market_basis"] == "instruments+location"


def test_esrs_summary_reports_energy_in_mwh_and_scope2_in_tco2e(rows: list[LedgerEntry]) -> None:
    # Given ledger rows
    # When the ESRS E1 summary is rendered
    body = json.loads(render_report(rows, "esrs", T0, T1)[0])
    # Then E1-5 is facility energy in MWh with the on-site renewable share
    mwh = math.fsum(r.facility_energy_kwh for r in rows) / 1000.0
    renewable = math.fsum(r.facility_energy_kwh - r.grid_kwh for r in rows) / 1000.0
    assert body["E1-5"]["total_energy_consumption_mwh"] == mwh
    assert body["E1-5"]["renewable_share"] == pytest.approx(renewable / mwh, rel=1e-12)
    assert 0 < body["E1-5"]["renewable_share"] < 1
    # and E1-6 is gross scope 2 in tCO2e, location- and market-based
    assert (
        body["E1-6"]["gross_scope_2_location_based_tco2e"]
        == math.fsum(r.co2_location_g for r in rows) / 1e6
    )
    assert (
        body["E1-6"]["gross_scope_2_market_based_tco2e"]
        == emissions_totals(rows).scope2_market_g / 1e6
    )
    assert body["ghg_scope_2"]["location_based_g"] == math.fsum(r.co2_location_g for r in rows)


def test_estimated_energy_is_labelled_in_every_format(rows: list[LedgerEntry]) -> None:
    # Given rows of which some are estimates
    estimated = [r for r in rows if r.energy_method == "estimated"]
    # When rendered
    df = pd.read_csv(io.StringIO(codecarbon_csv(rows)))
    esrs = esrs_e1_summary(emissions_totals(rows), T0, T1)
    # Then the CSV says which rows are estimates, and the ESRS summary how much energy is
    assert df["energy_estimated"].sum() == len(estimated)
    assert set(df.loc[df["energy_estimated"], "energy_method"]) == {"estimated"}
    assert esrs["estimated_rows"] == len(estimated)
    assert (
        esrs["E1-5"]["estimated_energy_mwh"]
        == math.fsum(r.facility_energy_kwh for r in estimated) / 1000.0
    )


def test_unknown_report_format_is_refused_with_the_valid_choices(rows: list[LedgerEntry]) -> None:
    with pytest.raises(InvalidInput, match="csv, json or esrs"):
        render_report(rows, "xlsx", T0, T1)


def test_budget_state_follows_the_budget_left() -> None:
    assert [budget_state(f).value for f in (0.9, 0.51, 0.5, 0.3, 0.25, 0.11, 0.10, 0.0, None)] == [
        "normal",
        "normal",
        "tightening",
        "tightening",
        "restricted",
        "restricted",
        "critical",
        "critical",
        "normal",
    ]


def test_ledger_entries_are_scoped_to_tenant_and_range(sessions: sessionmaker[Session]) -> None:
    # Given rows of two tenants, one of them outside the range
    with sessions() as s, s.begin():
        s.add_all([Tenant(id=t, name=t, created_at=T0) for t in ("t1", "t2")])
        s.add_all([_row(i, tenant="t1" if i % 3 else "t2") for i in range(9)])
        late = _row(20, tenant="t1")
        late.started_at = T1 + timedelta(hours=1)
        s.add(late)
    with sessions() as s:
        # When the ledger is read for one tenant and one day
        t1 = ledger_entries(s, T0, T1, tenant_id="t1")
        every = ledger_entries(s, T0, T1)
    # Then only that tenant's rows of that day come back, oldest first
    assert {r.tenant_id for r in t1} == {"t1"}
    assert len(t1) == 6 and len(every) == 9
    assert [r.started_at for r in every] == sorted(r.started_at for r in every)


def test_codecarbon_csv_parts_add_up_with_codecarbons_meanings(rows: list[LedgerEntry]) -> None:
    # Given rows on a GPU pool and rows on a CPU pool of the sample fleet
    from scheduler.samples import load_sample_fleet

    fleet = load_sample_fleet()
    cpu_rows = []
    for i in range(3):
        r = _row(30 + i)
        r.site, r.pool, r.model = "es-madrid", "cpu", "tiny-chat"
        cpu_rows.append(r)
    # When rendered as emissions.csv
    df = pd.read_csv(io.StringIO(codecarbon_csv(rows + cpu_rows, fleet=fleet)))
    # Then energy_consumed is the sum of its parts (each with PUE applied, as CodeCarbon does)
    parts = df["cpu_energy"] + df["gpu_energy"] + df["ram_energy"]
    assert list(df["energy_consumed"]) == pytest.approx(list(parts), rel=1e-12)
    assert list(df["energy_consumed"]) == pytest.approx(
        [r.facility_energy_kwh for r in rows + cpu_rows], rel=1e-12
    )
    # and water_consumed is energy_consumed x wue (on-site water)
    assert list(df["water_consumed"]) == pytest.approx(
        list(df["energy_consumed"] * df["wue"]), rel=1e-12
    )
    # and CPU pools are booked in cpu_* columns with no GPU count, GPU counts are whole
    cpu = df[df["pool"] == "cpu"]
    assert (cpu["gpu_energy"] == 0).all() and (cpu["cpu_energy"] > 0).all()
    assert cpu["gpu_count"].isna().all()
    gpu = df[df["pool"] != "cpu"]
    assert (gpu["gpu_energy"] > 0).all() and (gpu["cpu_energy"] == 0).all()


def test_fallback_and_marginal_rows_are_counted_and_kept_out_of_scope_2(
    rows: list[LedgerEntry],
) -> None:
    # Given one row booked with the zone-average fallback and one with a marginal signal
    rows[1].signal_fallback = "zone-average"
    rows[2].co2_marginal_g = 999.0
    rows[2].carbon_factor = "marginal"
    # When totalled
    body = json.loads(render_report(rows, "json", T0, T1)[0])
    # Then the fallback is counted, and the marginal figure is reported apart from scope 2
    scope2 = body["ghg_scope_2"]
    assert scope2["signal_fallback_rows"] == 1
    assert scope2["marginal_rows"] == 1
    assert scope2["induced_emissions_marginal_g"] == 999.0
    assert scope2["location_based_g"] == math.fsum(r.co2_location_g for r in rows)
    esrs = json.loads(render_report(rows, "esrs", T0, T1)[0])
    assert esrs["E1-5"]["by_source"]["purchased_mix_unknown_mwh"] == pytest.approx(
        math.fsum(r.grid_kwh for r in rows) / 1000.0
    )
    assert esrs["E1-6"]["total_ghg_location_based_tco2e"] == pytest.approx(
        (math.fsum(r.co2_location_g for r in rows) + math.fsum(r.embodied_co2_g for r in rows))
        / 1e6
    )


def test_asap_counterfactual_reprices_booked_grid_energy_at_the_submission_hour(
    rows: list[LedgerEntry], sessions: sessionmaker[Session]
) -> None:
    # Given cached signals at submission for de-frankfurt only
    submitted = T0 - timedelta(hours=2)
    with sessions.begin() as s:
        for signal, value in (("carbon", 512.0), ("price", 0.31)):
            s.add(
                ForecastPoint(
                    provider="synthetic",
                    key="de-frankfurt|{}",
                    signal=signal,
                    kind="forecast",
                    time=submitted,
                    value=value,
                    fetched_at=submitted,
                )
            )
    # When the batch's rows are re-priced as if run at submission
    with sessions() as s:
        asap, intensity = asap_counterfactual(s, rows, submitted)
    # Then de-frankfurt's grid energy is priced at 512 g/kWh and 0.31 per kWh, se-lulea keeps
    # its booked figures (no signal: no saving claimed), energy and water stay as booked
    de = [r for r in rows if r.site == "de-frankfurt"]
    se = [r for r in rows if r.site == "se-lulea"]
    assert de and se and intensity == {"de-frankfurt": 512.0, "se-lulea": None}
    co2 = sum(r.grid_kwh * 512.0 for r in de) + sum(r.co2_location_g for r in se)
    co2 += sum(r.embodied_co2_g for r in rows)
    assert asap.co2_g == pytest.approx(co2, rel=1e-12)
    assert asap.cost == pytest.approx(
        sum(r.grid_kwh * 0.31 for r in de) + sum(r.cost for r in se), rel=1e-12
    )
    assert asap.energy_kwh == pytest.approx(sum(r.facility_energy_kwh for r in rows))
    assert asap.water_l == pytest.approx(sum(r.water_onsite_l + r.water_offsite_l for r in rows))


def test_one_market_based_answer_in_every_view(
    rows: list[LedgerEntry], sessions: sessionmaker[Session]
) -> None:
    from scheduler.store.ledger import ledger_totals, market_based_g
    from scheduler.store.summaries import _actual as batch_object_actual  # the batch's "actual"

    # Given one batch split over a site with a contract and one without: a row booked before
    # every row had a market figure (None) and one booked under the one rule (basis location)
    mine = [r for r in rows if r.batch_id == "batch_1"]
    mine[0].co2_market_g = None
    mine[1].co2_market_g, mine[1].market_basis = mine[1].co2_location_g, "location"
    with sessions.begin() as s:
        s.add_all(rows)
    # When the report, the ledger totals and the batch object each sum it
    report = emissions_totals(mine).scope2_market_g
    with sessions() as s:
        totals = ledger_totals(s, batch_id="batch_1").co2_market_g
        summary = batch_object_actual(s, ["batch_1"])["batch_1"]["actual"]["co2_market_g"]
    # Then they give one answer (instruments where they exist, location-based elsewhere)
    expected = math.fsum(
        r.co2_market_g if r.co2_market_g is not None else r.co2_location_g for r in mine
    )
    assert totals is not None and summary is not None
    assert report == pytest.approx(expected, rel=1e-12) == market_based_g(mine)
    assert totals == pytest.approx(expected, rel=1e-12)
    assert summary == pytest.approx(expected, rel=1e-12)
    # And every fallback row is counted (the fixture's row 5 has no market figure either)
    fallbacks = [r for r in mine if r.co2_market_g is None or r.market_basis == "location"]
    assert len(fallbacks) == 3 and emissions_totals(mine).market_fallback_rows == 3


def test_rows_are_counted_by_provenance_and_lifecycle_stays_out_of_scope_2(
    rows: list[LedgerEntry],
) -> None:
    # Given a synthetic fallback row, a persistence row, a lifecycle row and a row without price
    rows[0].signal_fallback, rows[0].signal_synthetic = "fallback-provider", True
    rows[0].signal_provider = "synthetic"
    rows[1].signal_fallback = "persistence"
    rows[2].carbon_factor, rows[2].co2_lifecycle_g = (
        "average-lifecycle",
        rows[2].co2_location_g * 1.2,
    )
    rows[3].price_fallback = "no-price"
    location = math.fsum(r.co2_location_g for r in rows)
    # When reported
    body = json.loads(render_report(rows, "json", T0, T1)[0])
    esrs = json.loads(render_report(rows, "esrs", T0, T1)[0])
    # Then each kind is counted, the lifecycle figure is apart, and scope 2 is unchanged
    scope2 = body["ghg_scope_2"]
    assert scope2["signal_fallbacks"] == {"fallback-provider": 1, "persistence": 1}
    assert scope2["synthetic_rows"] == 1 and esrs["synthetic_rows"] == 1
    assert scope2["lifecycle_rows"] == 1
    assert scope2["lifecycle_co2_g"] == rows[2].co2_lifecycle_g
    assert scope2["location_based_g"] == location
    upstream = esrs["E1-6"]["scope_3_category_3_upstream_energy_tco2e"]
    assert upstream == pytest.approx(rows[2].co2_location_g * 0.2 / 1e6)
    assert esrs["price_fallback_rows"] == 1
    # and the CSV says so on the row
    df = pd.read_csv(io.StringIO(codecarbon_csv(rows)))
    assert df.loc[0, "signal_fallback"] == "fallback-provider" and bool(
        df.loc[0, "signal_synthetic"]
    )
    assert df.loc[3, "price_fallback"] == "no-price"
