"""Emissions reports from the ledger: CodeCarbon-compatible CSV, GHG Protocol scope 2, ESRS E1."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import ESTIMATED_LOAD_SUFFIX, Fleet
from scheduler.errors import InvalidInput
from scheduler.pricing import MARKET_LOCATION, MARKET_PARTIAL_FALLBACK
from scheduler.review.batch_review import is_estimate
from scheduler.review.budget_breaches import breached_days
from scheduler.review.esrs import EmissionsTotals, esrs_e1_summary, ghg_scope2
from scheduler.review.grid_mix import grid_mix_split
from scheduler.review.provenance import provenance_counts
from scheduler.review.views import LedgerRow
from scheduler.store.ledger import market_based_g
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
    "signal_provider",
    "signal_synthetic",
    "signal_fallback_reason",
    "market_basis",
    "co2_marginal_g",
    "co2_lifecycle_g",
    "price_fallback",
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


def _estimated_facility_kwh(r: LedgerEntry) -> float:
    """The estimated part of a row's facility energy: all of it, or for a measured window
    with an estimated model load (``measured-*+estimated-load``) the load's share only."""
    if r.energy_method.endswith(ESTIMATED_LOAD_SUFFIX) and r.it_energy_kwh > 0:
        share = min(1.0, (r.model_load_kwh or 0.0) / r.it_energy_kwh)
        return r.facility_energy_kwh * share
    return r.facility_energy_kwh


def emissions_totals(rows: Sequence[LedgerEntry]) -> EmissionsTotals:
    """Sum ledger rows: energy (kWh), scope 2 location- and market-based CO2 (g), water, cost."""
    est = [r for r in rows if is_estimate(r.energy_method)]
    return EmissionsTotals(
        rows=len(rows),
        measured_rows=len(rows) - len(est),
        estimated_rows=len(est),
        it_energy_kwh=math.fsum(r.it_energy_kwh for r in rows),
        facility_energy_kwh=math.fsum(r.facility_energy_kwh for r in rows),
        estimated_facility_energy_kwh=math.fsum(_estimated_facility_kwh(r) for r in est),
        grid_kwh=math.fsum(r.grid_kwh for r in rows),
        onsite_renewable_kwh=math.fsum(max(0.0, r.facility_energy_kwh - r.grid_kwh) for r in rows),
        scope2_location_g=math.fsum(r.co2_location_g for r in rows),
        scope2_market_g=market_based_g(rows),
        market_fallback_rows=sum(
            1 for r in rows if r.co2_market_g is None or r.market_basis == MARKET_LOCATION
        ),
        market_partial_fallback_rows=sum(
            1
            for r in rows
            if r.co2_market_g is not None and r.market_basis in MARKET_PARTIAL_FALLBACK
        ),
        signal_fallback_rows=sum(1 for r in rows if r.signal_fallback),
        marginal_rows=sum(1 for r in rows if r.co2_marginal_g is not None),
        induced_marginal_co2_g=math.fsum(r.co2_marginal_g or 0.0 for r in rows),
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
        **provenance_counts(rows),
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
    if session is not None:  # a breach is a report line, not only a negative left_g
        last = (end - timedelta(microseconds=1)).date() + timedelta(days=1)
        body["budget_breaches"] = [b.as_dict() for b in breached_days(session, start.date(), last)]
    return json.dumps(body, indent=2), "application/json"
