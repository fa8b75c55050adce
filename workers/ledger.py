"""Ledger maths: one execution attempt's energy x the signals of its slot -> ledger values.

Every figure is priced by ``scheduler.pricing.price_piece``, the rule the plan uses,
so a shard that runs as planned (same tokens, slot and signals, energy estimated with the
planner's token model) books exactly its planned figures; where anything differs the row's
``deviations`` say what and by how much.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.domain import CarbonFactor, Pool, Site, SlotSignal
from scheduler.pricing import (
    PricedPiece,
    energy_from_it,
    grid_co2_g,
    market_basis,
    price_piece,
    renewable_allowance,
)
from scheduler.store.tables import AssignmentRecord
from workers.energy.base import Measurement

_REL = 1e-9


@dataclass(frozen=True, slots=True)
class PlannedShare:
    """The plan's figures for the requests of one shard (its assignment's figures, pro rata).

    ``renewable_kwh`` and ``grid_kwh`` are None for plans stored before they were kept.
    """

    energy_kwh: float
    co2_g: float
    water_l: float
    cost: float
    input_tokens: float
    output_tokens: float
    site: str
    slot: datetime
    carbon_g_per_kwh: float | None
    renewable_kw: float | None
    renewable_kwh: float | None = None
    grid_kwh: float | None = None
    gpu_hours: float | None = None


@dataclass(frozen=True, slots=True)
class LedgerValues(PricedPiece):
    """A ``ledger_entries`` row's figures: the priced piece plus how it was booked.

    The energy, carbon, water and cost fields are ``PricedPiece``'s (kWh, grams, litres, the
    fleet's currency), priced with the scope 2 signal: ``co2_location_g`` always uses an
    average direct (operational) factor; ``co2_marginal_g`` is set only when the slot's signal
    is a marginal rate (the emissions the load induced, consequential: never scope 2, never
    "avoided"); ``co2_lifecycle_g`` only when it is an average lifecycle factor (upstream
    included: reported apart, scope 3 category 3). ``carbon_factor`` names the signal's own
    factor type. ``it_energy_kwh``, ``facility_energy_kwh
    and ``renewable_share`` name them as the ledger's columns do.
    """

    energy_method: str
    carbon_source: str
    carbon_factor: str = CarbonFactor.AVERAGE_DIRECT.value
    co2_marginal_g: float | None = None
    co2_lifecycle_g: float | None = None
    market_basis: str | None = None

    @property
    def it_energy_kwh(self) -> float:
        """IT energy in kWh (the ledger's column name for ``it_kwh``)."""
        return self.it_kwh

    @property
    def facility_energy_kwh(self) -> float:
        """Facility energy (IT x PUE) in kWh (the ledger's name for ``facility_kwh``)."""
        return self.facility_kwh

    @property
    def renewable_share(self) -> float:
        """Share of the facility energy from on-site renewables (0 without energy)."""
        return self.renewable_kwh / self.facility_kwh if self.facility_kwh > 0 else 0.0


def planned_share(assignment: AssignmentRecord | None, shard_requests: int) -> PlannedShare | None:
    """The plan's figures for a shard: its assignment's figures times its share of requests."""
    if assignment is None or assignment.requests <= 0:
        return None
    f = shard_requests / assignment.requests
    return PlannedShare(
        energy_kwh=assignment.energy_kwh * f,
        co2_g=assignment.co2_g * f,
        water_l=assignment.water_l * f,
        cost=assignment.cost * f,
        input_tokens=assignment.input_tokens * f,
        output_tokens=assignment.output_tokens * f,
        site=assignment.site,
        slot=assignment.slot_start,
        carbon_g_per_kwh=assignment.carbon_g_per_kwh,
        renewable_kw=assignment.renewable_kw,
        renewable_kwh=None if assignment.renewable_kwh is None else assignment.renewable_kwh * f,
        grid_kwh=None if assignment.grid_kwh is None else assignment.grid_kwh * f,
        gpu_hours=assignment.gpu_hours * f,
    )


def renewable_allowance_kwh(
    signal: SlotSignal,
    *,
    duration_s: float,
    slot_hours: float,
    already_booked_kwh: float,
    planned: PlannedShare | None = None,
    facility_kwh: float | None = None,
) -> float:
    """Renewable energy one execution may claim (``scheduler.pricing``, rule 3).

    A shard that runs in its planned site and slot claims the renewables the plan allocated to
    it, scaled by the slot's renewables now known against those planned and by its booked
    facility energy against its planned one (the same renewable share of its energy as
    planned, rule 2 of the pricing module: a token estimate that was 10 % short books 10 % more
    energy, with the same share from renewables, not all of the extra from the grid). Anything
    else claims
    the panel output during its own run (``renewable_kw x duration``). Either way never more
    than what is left of the slot's renewable energy (``renewable_kw x slot_hours``) after the
    attempts already booked at that site and slot, so renewables are never counted twice.

    Args:
        signal: signals of the site and slot the attempt ran in.
        duration_s: wall-clock duration of the attempt in seconds.
        slot_hours: length of one slot in hours.
        already_booked_kwh: renewable kWh already booked by other attempts at that site and slot.
        planned: the shard's planned share, when it ran in its planned site and slot.
        facility_kwh: the attempt's booked facility energy (default: as planned).

    Returns:
        The renewable allowance in kWh (>= 0).
    """
    return renewable_allowance(
        signal.renewable_kw,
        duration_h=max(0.0, duration_s) / 3600.0,
        slot_hours=slot_hours,
        already_booked_kwh=already_booked_kwh,
        planned=None
        if planned is None or planned.renewable_kwh is None
        else (planned.renewable_kwh, planned.renewable_kw or 0.0, planned.energy_kwh),
        facility_kwh=facility_kwh,
    )


def compute_ledger_values(
    measurement: Measurement,
    *,
    site: Site,
    pool: Pool,
    gpus_per_replica: int,
    signal: SlotSignal,
    carbon_source: str,
    renewable_allowance_kwh: float,
    gpu_hours: float | None = None,
    average_g_per_kwh: float | None = None,
) -> LedgerValues:
    """Book one attempt's IT energy with the signals of the slot it ran in.

    Priced by ``scheduler.pricing.price_piece`` (planning-formats.md section 4 with
    the booked energy in place of the profile's). A marginal or lifecycle signal books its
    figure as ``co2_marginal_g`` / ``co2_lifecycle_g`` only; location-based CO2 then uses
    ``average_g_per_kwh`` (an average direct factor).

    Args:
        measurement: IT energy of the attempt and how it was obtained.
        site: the site it ran at (PUE, WUE, EWIF, market factor).
        pool: the pool it ran on (embodied carbon per GPU-hour).
        gpus_per_replica: GPUs one replica of the model holds on this pool.
        signal: carbon, price, renewables (and optional WUE) of the slot it ran in.
        carbon_source: where ``signal`` came from (``actual``, ``plan``, ``forecast``...).
        renewable_allowance_kwh: see ``renewable_allowance_kwh``.
        gpu_hours: GPU-hours to book (default: ``gpus_per_replica x duration``).
        average_g_per_kwh: average direct factor for scope 2 when ``signal`` is not one.

    Returns:
        The ledger values.
    """
    it_kwh = max(0.0, measurement.energy_kwh)
    if gpu_hours is None:
        gpu_hours = gpus_per_replica * max(0.0, measurement.duration_s) / 3600.0
    factor = signal.carbon_factor
    scope2 = signal
    if factor != CarbonFactor.AVERAGE_DIRECT.value:
        scope2 = dataclasses.replace(
            signal,
            carbon_g_per_kwh=average_g_per_kwh if average_g_per_kwh is not None else 0.0,
            carbon_factor=CarbonFactor.AVERAGE_DIRECT.value,
        )
    priced = price_piece(
        site=site,
        pool=pool,
        signal=scope2,
        energy=energy_from_it(gpu_hours, it_kwh, site.pue),
        renewable_kwh=renewable_allowance_kwh,
    )
    own = grid_co2_g(priced.grid_kwh, signal.carbon_g_per_kwh)  # the signal's own factor type
    return LedgerValues(
        **{f.name: getattr(priced, f.name) for f in dataclasses.fields(PricedPiece)},
        energy_method=str(measurement.method),
        carbon_source=carbon_source,
        carbon_factor=factor,
        co2_marginal_g=own if factor == CarbonFactor.MARGINAL.value else None,
        co2_lifecycle_g=own if factor == CarbonFactor.AVERAGE_LIFECYCLE.value else None,
        market_basis=market_basis(site),
    )


def _differs(planned: float, actual: float) -> bool:
    return abs(planned - actual) > _REL * max(1.0, abs(planned), abs(actual))


def deviations(
    planned: PlannedShare | None,
    *,
    site: str,
    slot: datetime,
    input_tokens: int,
    output_tokens: int,
    values: LedgerValues,
    renewable_kw: float,
    busy_gpu_s: float | None = None,
    signal_g_per_kwh: float | None = None,
) -> dict[str, Any] | None:
    """What differs between a shard's plan and its booking, and by how much.

    Returns:
        ``{name: {"planned", "actual", "delta"}}`` for each of ``site``/``slot`` (ran
        elsewhere or at another time), ``input_tokens``, ``output_tokens``, ``busy_gpu_s``
        (GPU-seconds the profile implies against those the meter timed), ``energy_kwh``
        (facility), ``energy_method`` (the plan is a token-model estimate), ``carbon_g_per_kwh``,
        ``renewable_kw``, ``grid_kwh``, ``co2_g`` that differ (relative 1e-9); None without a
        plan, and an empty dict when the booking is exactly the plan. ``carbon_g_per_kwh``
        compares the plan's signal with the booked slot's signal of the same factor type
        (``signal_g_per_kwh``; default the row's scope 2 factor); ``co2_g`` compares scope 2
        figures (the plan's are priced in the ledger's factor type).
    """
    if planned is None:
        return None
    out: dict[str, Any] = {}
    if planned.site != site:
        out["site"] = {"planned": planned.site, "actual": site}
    if planned.slot != slot:
        out["slot"] = {
            "planned": planned.slot.isoformat(),
            "actual": slot.isoformat(),
            "delta_h": (slot - planned.slot).total_seconds() / 3600.0,
        }
    if values.energy_method != "estimated-profile":
        out["energy_method"] = {"planned": "estimated-profile", "actual": values.energy_method}
    numbers: list[tuple[str, float | None, float]] = [
        ("input_tokens", planned.input_tokens, float(input_tokens)),
        ("output_tokens", planned.output_tokens, float(output_tokens)),
        ("energy_kwh", planned.energy_kwh, values.facility_energy_kwh),
        (
            "busy_gpu_s",
            None if planned.gpu_hours is None or busy_gpu_s is None else planned.gpu_hours * 3600,
            busy_gpu_s if busy_gpu_s is not None else 0.0,
        ),
        (
            "carbon_g_per_kwh",
            planned.carbon_g_per_kwh,
            values.carbon_g_per_kwh if signal_g_per_kwh is None else signal_g_per_kwh,
        ),
        ("renewable_kw", planned.renewable_kw, renewable_kw),
        ("grid_kwh", planned.grid_kwh, values.grid_kwh),
        ("co2_g", planned.co2_g, values.co2_location_g + values.embodied_co2_g),
    ]
    for name, want, got in numbers:
        if want is not None and _differs(want, got):
            out[name] = {"planned": want, "actual": got, "delta": got - want}
    return out
