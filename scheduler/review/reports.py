"""Emissions reports from the ledger: CodeCarbon-compatible CSV, GHG Protocol scope 2, ESRS E1."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import Fleet
from scheduler.errors import InvalidInput
from scheduler.optimizer.pricing import MARKET_PARTIAL_FALLBACK
from scheduler.review.batch_review import is_estimate
from scheduler.review.grid_mix import GridMixSplit, grid_mix_split
from scheduler.review.views import LedgerRow
from scheduler.store.tables import LedgerEntry

# CodeCarbon's EmissionsData fields, in its order (units: s, kg CO2eq, kg/s, W, kWh, L, GB).
CODECARBON_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "on_cloud",
    "pue",
    "wue",
)
# gridshift's own columns, after CodeCarbon's (straight from the ledger row).
GRIDSHIFT_COLUMNS: tuple[str, ...] = (
    "ledger_id",
    "tenant_id",
    "batch_id",
    "shard_id",
    "attempt",
    "site",
    "pool",
    "model",
    "started_at",
    "ended_at",
    "energy_method",
    "energy_estimated",
    "it_energy_kwh",
    "facility_energy_kwh",
    "grid_kwh",
    "renewable_share",
    "carbon_g_per_kwh",
    "carbon_source",
    "co2_location_g",
    "co2_market_g",
    "embodied_co2_g",
    "water_onsite_l",
    "water_offsite_l",
    "cost",
    "gpu_hours",
    "requests_done",
    "requests_failed",
    "input_tokens",
    "output_tokens",
    "planned_energy_kwh",
    "planned_co2_g",
    "carbon_factor",
    "signal_fallback",
    "market_basis",
    "co2_marginal_g",
    "busy_estimate_kwh",
    "model_load_kwh",
    "model_load_method",
)
EMISSIONS_CSV_COLUMNS = CODECARBON_COLUMNS + GRIDSHIFT_COLUMNS


class ReportFormat(StrEnum):
    """Output formats of ``GET /v1/reports/emissions`` and ``gridshift report``."""

    CSV = "csv"
    JSON = "json"
    ESRS = "esrs"


@dataclass(frozen=True, slots=True)
class EmissionsTotals:
    """Sums over ledger rows (``math.fsum``, so every report gives the same numbers)."""

    rows: int
    measured_rows: int
    estimated_rows: int
    it_energy_kwh: float
    facility_energy_kwh: float
    estimated_facility_energy_kwh: float
    grid_kwh: float
    onsite_renewable_kwh: float
    scope2_location_g: float
    scope2_market_g: float
    market_fallback_rows: int
    market_partial_fallback_rows: int
    signal_fallback_rows: int
    marginal_rows: int
    avoided_marginal_co2_g: float
    embodied_co2_g: float
    water_onsite_l: float
    water_offsite_l: float
    cost: float
    model_load_kwh: float = 0.0  # IT energy of model loads, part of it_energy_kwh
    estimated_model_load_kwh: float = 0.0  # the part of it that is an estimate


def ledger_entries(
    session: Session, start: datetime, end: datetime, *, tenant_id: str | None = None
) -> list[LedgerEntry]:
    """Return ledger rows whose run started in ``[start, end)``, oldest first.

    Args:
        session: an open session.
        start: aware UTC start (inclusive).
        end: aware UTC end (exclusive).
        tenant_id: only this tenant's rows (``None``: every tenant).
    """
    q = select(LedgerEntry).where(LedgerEntry.started_at >= start, LedgerEntry.started_at < end)
    if tenant_id is not None:
        q = q.where(LedgerEntry.tenant_id == tenant_id)
    return list(session.scalars(q.order_by(LedgerEntry.started_at, LedgerEntry.id)).all())


def _market_g(r: LedgerEntry) -> float:
    # GHG Protocol scope 2 guidance: without contractual instruments the market-based figure
    # falls back to a grid factor; we use the location-based one and count those rows.
    return r.co2_market_g if r.co2_market_g is not None else r.co2_location_g


def emissions_totals(rows: Sequence[LedgerEntry]) -> EmissionsTotals:
    """Sum ledger rows: energy (kWh), scope 2 location- and market-based CO2 (g), water, cost."""
    est = [r for r in rows if is_estimate(r.energy_method)]
    return EmissionsTotals(
        rows=len(rows),
        measured_rows=len(rows) - len(est),
        estimated_rows=len(est),
        it_energy_kwh=math.fsum(r.it_energy_kwh for r in rows),
        facility_energy_kwh=math.fsum(r.facility_energy_kwh for r in rows),
        estimated_facility_energy_kwh=math.fsum(r.facility_energy_kwh for r in est),
        grid_kwh=math.fsum(r.grid_kwh for r in rows),
        onsite_renewable_kwh=math.fsum(max(0.0, r.facility_energy_kwh - r.grid_kwh) for r in rows),
        scope2_location_g=math.fsum(r.co2_location_g for r in rows),
        scope2_market_g=math.fsum(_market_g(r) for r in rows),
        market_fallback_rows=sum(1 for r in rows if r.co2_market_g is None),
        market_partial_fallback_rows=sum(
            1
            for r in rows
            if r.co2_market_g is not None and r.market_basis in MARKET_PARTIAL_FALLBACK
        ),
        signal_fallback_rows=sum(1 for r in rows if r.signal_fallback),
        marginal_rows=sum(1 for r in rows if r.co2_marginal_g is not None),
        avoided_marginal_co2_g=math.fsum(r.co2_marginal_g or 0.0 for r in rows),
        embodied_co2_g=math.fsum(r.embodied_co2_g for r in rows),
        water_onsite_l=math.fsum(r.water_onsite_l for r in rows),
        water_offsite_l=math.fsum(r.water_offsite_l for r in rows),
        cost=math.fsum(r.cost for r in rows),
        model_load_kwh=math.fsum(r.model_load_kwh or 0.0 for r in rows),
        estimated_model_load_kwh=math.fsum(
            r.model_load_kwh or 0.0
            for r in rows
            if r.model_load_method is not None and is_estimate(r.model_load_method)
        ),
    )


def _device(r: LedgerEntry, fleet: Fleet | None) -> tuple[str, int | None]:
    """(device model, whole devices per replica) of the row's pool, from the fleet if known."""
    if fleet is not None:
        try:
            pool = fleet.site(r.site).pool(r.pool)
            profile = fleet.model(r.model).profiles.get(pool.gpu)
            return pool.gpu, profile.gpus if profile else 1
        except KeyError:
            pass
    return r.pool, None


def codecarbon_row(r: LedgerEntry, *, fleet: Fleet | None = None) -> dict[str, Any]:
    """One ledger row as a CodeCarbon ``emissions.csv`` row plus gridshift's columns.

    CodeCarbon's meanings: it multiplies each part's energy by the PUE, so ``gpu_energy`` (or
    ``cpu_energy`` for a CPU pool) is facility energy (IT x PUE) and ``energy_consumed`` the sum
    of the parts; ``gpu_power``/``cpu_power`` is the IT power in W; ``water_consumed`` is
    on-site water (``energy_consumed x wue``, so ``wue`` here is litres per kWh of facility
    energy; off-site water is gridshift's ``water_offsite_l``); ``emissions`` is operational
    location-based CO2 in kg (embodied is its own column); ``gpu_count`` is the whole number of
    GPUs of one replica (empty for CPU pools and when unknown). RAM is not metered apart (0).
    """
    duration_s = max(0.0, (r.ended_at - r.started_at).total_seconds())
    emissions_kg = r.co2_location_g / 1000.0
    model, devices = _device(r, fleet)
    cpu = model.upper() == "CPU"
    power_w = r.it_energy_kwh * 3.6e6 / duration_s if duration_s > 0 else 0.0
    row: dict[str, Any] = dict.fromkeys(EMISSIONS_CSV_COLUMNS, "")
    row.update(
        timestamp=r.ended_at.strftime("%Y-%m-%dT%H:%M:%S"),
        project_name=f"gridshift/{r.tenant_id}",
        run_id=f"{r.shard_id}#{r.attempt}",
        experiment_id=r.batch_id,
        duration=duration_s,
        emissions=emissions_kg,
        emissions_rate=emissions_kg / duration_s if duration_s > 0 else 0.0,
        cpu_power=power_w if cpu else 0.0,
        gpu_power=0.0 if cpu else power_w,
        ram_power=0.0,
        cpu_energy=r.facility_energy_kwh if cpu else 0.0,
        gpu_energy=0.0 if cpu else r.facility_energy_kwh,
        ram_energy=0.0,
        energy_consumed=r.facility_energy_kwh,  # = cpu_energy + gpu_energy + ram_energy
        water_consumed=r.water_onsite_l,
        region=r.site,
        cpu_count=devices if cpu and devices is not None else "",
        cpu_model="CPU" if cpu else "",
        gpu_count="" if cpu or devices is None else devices,
        gpu_model="" if cpu else model,
        tracking_mode="machine",
        on_cloud="N",
        pue=r.facility_energy_kwh / r.it_energy_kwh if r.it_energy_kwh > 0 else 1.0,
        wue=r.water_onsite_l / r.facility_energy_kwh if r.facility_energy_kwh > 0 else 0.0,
    )
    for name in GRIDSHIFT_COLUMNS:
        if name == "ledger_id":
            row[name] = r.id
        elif name == "energy_estimated":
            row[name] = is_estimate(r.energy_method)
        elif name in ("started_at", "ended_at"):
            row[name] = getattr(r, name).isoformat()
        else:
            value = getattr(r, name)
            row[name] = "" if value is None else value
    return row


def codecarbon_csv(rows: Sequence[LedgerEntry], *, fleet: Fleet | None = None) -> str:
    """Render ledger rows as CodeCarbon-compatible ``emissions.csv`` text (floats round-trip)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EMISSIONS_CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(codecarbon_row(r, fleet=fleet))
    return buf.getvalue()


def ghg_scope2(totals: EmissionsTotals) -> dict[str, Any]:
    """GHG Protocol scope 2 totals (location- and market-based) in g and t CO2e."""
    return {
        "location_based_g": totals.scope2_location_g,
        "market_based_g": totals.scope2_market_g,
        "location_based_tco2e": totals.scope2_location_g / 1e6,
        "market_based_tco2e": totals.scope2_market_g / 1e6,
        "market_based_fallback_rows": totals.market_fallback_rows,
        "market_based_partial_fallback_rows": totals.market_partial_fallback_rows,
        "signal_fallback_rows": totals.signal_fallback_rows,
        "marginal_rows": totals.marginal_rows,
        "avoided_emissions_marginal_estimate_g": totals.avoided_marginal_co2_g,
        "note": (
            "Scope 2 covers purchased grid electricity. Location-based uses average emission "
            "factors only: where a site's signal is a marginal rate, its figure is reported "
            "apart as an avoided-emissions estimate (avoided_emissions_marginal_estimate_g) and "
            "scope 2 uses an average factor. Rows whose carbon intensity came from a fallback "
            "(persistence, a configured factor, the zone average) are counted in "
            "signal_fallback_rows. Market-based uses each site's contractual factor; rows "
            "without one fall back to the location-based grid factor "
            "(market_based_fallback_rows); rows whose instruments cover only part of the grid "
            "energy and whose site has no residual mix price the rest at the location-based "
            "factor (market_based_partial_fallback_rows). Embodied hardware carbon is scope 3, reported apart."
        ),
    }


def esrs_e1_summary(
    totals: EmissionsTotals, start: datetime, end: datetime, mix: GridMixSplit | None = None
) -> dict[str, Any]:
    """ESRS E1 datapoints: E1-5 energy (MWh, by source) and E1-6 gross scope 2 (tCO2e).

    ``mix`` splits purchased grid electricity by source (``grid_mix.grid_mix_split``); without
    it every purchased MWh is of unknown mix.
    """
    total_mwh = totals.facility_energy_kwh / 1000.0
    renewable_mwh = totals.onsite_renewable_kwh / 1000.0
    grid_mwh = totals.grid_kwh / 1000.0
    if mix is None:
        mix = GridMixSplit(unknown_mix_kwh=totals.grid_kwh, rows_without_mix=totals.rows)
    return {
        "standard": "ESRS E1",
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "E1-5": {
            "total_energy_consumption_mwh": total_mwh,
            "self_generated_renewable_mwh": renewable_mwh,
            "purchased_grid_electricity_mwh": grid_mwh,
            "renewable_share": (renewable_mwh + mix.renewable_kwh / 1000.0) / total_mwh
            if total_mwh > 0
            else 0.0,
            "self_generated_renewable_share": renewable_mwh / total_mwh if total_mwh > 0 else 0.0,
            "estimated_energy_mwh": totals.estimated_facility_energy_kwh / 1000.0,
            "by_source": {
                "renewable_self_generated_mwh": renewable_mwh,
                "renewable_purchased_mwh": mix.renewable_kwh / 1000.0,
                "fossil_purchased_mwh": mix.fossil_kwh / 1000.0,
                "nuclear_purchased_mwh": mix.nuclear_kwh / 1000.0,
                "purchased_mix_unclassified_mwh": mix.unclassified_kwh / 1000.0,
                "purchased_mix_unknown_mwh": mix.unknown_mix_kwh / 1000.0,
            },
            "rows_with_grid_mix": mix.rows_with_mix,
            "rows_with_unknown_mix": mix.rows_without_mix,
            "note": (
                "Facility energy (IT x PUE). Self-generated is the on-site renewables; purchased "
                "grid electricity is split into fossil, nuclear and renewable by the grid's "
                "generation mix when it ran (signals.mix: UK Carbon Intensity generationmix, "
                "Electricity Maps power breakdown, or CSV columns). The part of a known mix its "
                "source does not classify (imports, other, unknown) is "
                "purchased_mix_unclassified_mwh; rows whose site has no cached mix are "
                "purchased_mix_unknown_mwh, counted in rows_with_unknown_mix. The renewable "
                "share counts on-site and purchased renewables (self_generated_renewable_share: "
                "on-site only)."
            ),
        },
        "E1-6": {
            "gross_scope_1_tco2e": 0.0,
            "gross_scope_2_location_based_tco2e": totals.scope2_location_g / 1e6,
            "gross_scope_2_market_based_tco2e": totals.scope2_market_g / 1e6,
            "scope_3_embodied_hardware_tco2e": totals.embodied_co2_g / 1e6,
            "total_ghg_location_based_tco2e": (totals.scope2_location_g + totals.embodied_co2_g)
            / 1e6,
            "total_ghg_market_based_tco2e": (totals.scope2_market_g + totals.embodied_co2_g) / 1e6,
            "note": (
                "Scope 1 is zero: gridshift's sites burn no fuel it books. Scope 3 covers only "
                "the embodied carbon of the hardware share used."
            ),
        },
        "signal_fallback_rows": totals.signal_fallback_rows,
        "ledger_rows": totals.rows,
        "estimated_rows": totals.estimated_rows,
    }


def ledger_row(r: LedgerEntry) -> LedgerRow:
    """A ledger row as its API view, with the ``energy_estimated`` flag."""
    row = LedgerRow.model_validate(r)
    row.energy_estimated = is_estimate(r.energy_method)
    return row


def render_report(
    rows: Sequence[LedgerEntry],
    fmt: ReportFormat | str,
    start: datetime,
    end: datetime,
    *,
    fleet: Fleet | None = None,
    session: Session | None = None,
) -> tuple[str, str]:
    """Render an emissions report over ledger rows.

    Args:
        rows: ledger rows (from ``ledger_entries``).
        fmt: ``csv`` (CodeCarbon ``emissions.csv``), ``json`` (totals, scope 2, rows) or
            ``esrs`` (ESRS E1-5/E1-6 summary with the scope 2 totals).
        start: period start, for the header.
        end: period end, for the header.
        fleet: optional fleet, to name GPU models in the CSV.
        session: an open session, to split ESRS purchased electricity by the cached grid mix
            (without it, the mix is unknown).

    Returns:
        The text and its media type.

    Raises:
        InvalidInput: unknown format.
    """
    try:
        fmt = ReportFormat(fmt)
    except ValueError as e:
        raise InvalidInput(f"unknown report format {fmt!r}; use csv, json or esrs") from e
    if fmt is ReportFormat.CSV:
        return codecarbon_csv(rows, fleet=fleet), "text/csv"
    totals = emissions_totals(rows)
    if fmt is ReportFormat.ESRS:
        mix = grid_mix_split(session, rows) if session is not None else None
        body: dict[str, Any] = esrs_e1_summary(totals, start, end, mix)
        body["ghg_scope_2"] = ghg_scope2(totals)
    else:
        body = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "totals": asdict(totals),
            "ghg_scope_2": ghg_scope2(totals),
            "rows": [ledger_row(r).model_dump(mode="json") for r in rows],
        }
    return json.dumps(body, indent=2), "application/json"
