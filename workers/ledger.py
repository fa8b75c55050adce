"""Ledger maths: one execution attempt's measurement x the signals of its slot -> ledger values."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.domain import Pool, Site, SlotSignal
from workers.energy.base import Measurement


@dataclass(frozen=True, slots=True)
class PlannedShare:
    """The plan's figures for the requests of one shard (assignment figures, pro rata)."""

    energy_kwh: float | None = None
    co2_g: float | None = None
    water_l: float | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class LedgerValues:
    """Everything a ``ledger_entries`` row holds about energy, carbon, water and cost.

    Energies in kWh, masses of CO2 in grams, water in litres, cost in the fleet's currency.
    """

    gpu_hours: float
    it_energy_kwh: float
    facility_energy_kwh: float
    energy_method: str
    renewable_kwh: float
    renewable_share: float
    grid_kwh: float
    carbon_g_per_kwh: float
    carbon_source: str
    co2_location_g: float
    co2_market_g: float | None
    embodied_co2_g: float
    water_onsite_l: float
    water_offsite_l: float
    cost: float


def renewable_allowance_kwh(
    signal: SlotSignal, *, duration_s: float, slot_hours: float, already_booked_kwh: float
) -> float:
    """Renewable energy one execution may claim (first come, first served within a slot).

    The attribution rule: an attempt may use on-site renewables up to the panel output during
    its own run (``renewable_kw x duration``) and never more than what is left of the slot's
    renewable energy (``renewable_kw x slot_hours``) after the attempts already booked at the
    same site in the same slot. So renewables are never counted twice across executions, and a
    lone shard in a sunny slot gets them all, as the planner assumed.

    Args:
        signal: signals of the site and slot the attempt ran in.
        duration_s: wall-clock duration of the attempt in seconds.
        slot_hours: length of one slot in hours.
        already_booked_kwh: renewable kWh already booked by other attempts at that site and slot.

    Returns:
        The renewable allowance in kWh (>= 0).
    """
    renewable_kw = max(0.0, signal.renewable_kw)
    during_run_kwh = renewable_kw * max(0.0, duration_s) / 3600.0
    left_in_slot_kwh = max(0.0, renewable_kw * slot_hours - max(0.0, already_booked_kwh))
    return min(during_run_kwh, left_in_slot_kwh)


def compute_ledger_values(
    measurement: Measurement,
    *,
    site: Site,
    pool: Pool,
    gpus_per_replica: int,
    signal: SlotSignal,
    carbon_source: str,
    renewable_allowance_kwh: float,
) -> LedgerValues:
    """Book one attempt's IT energy with the signals of the slot it ran in.

    Formulas (planning-formats.md section 4, with measured energy in place of the profile):
    ``facility = IT x PUE``; ``grid = max(0, facility - renewable allowance)``;
    ``co2_location = grid x carbon``; ``co2_market = grid x market factor`` (None when the site
    has no contract factor); ``embodied = gpu_hours x embodied_g_per_gpu_hour``;
    ``water = IT x WUE (on-site) + grid x EWIF (off-site)``; ``cost = grid x price``.

    Args:
        measurement: IT energy of the attempt and how it was obtained.
        site: the site it ran at (PUE, WUE, EWIF, market factor).
        pool: the pool it ran on (embodied carbon per GPU-hour).
        gpus_per_replica: GPUs one replica of the model holds on this pool.
        signal: carbon, price, renewables (and optional WUE) of the slot it ran in.
        carbon_source: where ``signal`` came from (``actual``, ``forecast``, ``plan``...).
        renewable_allowance_kwh: see ``renewable_allowance_kwh``.

    Returns:
        The ledger values.
    """
    it_kwh = max(0.0, measurement.energy_kwh)
    facility_kwh = it_kwh * site.pue
    gpu_hours = gpus_per_replica * max(0.0, measurement.duration_s) / 3600.0
    renewable_kwh = min(facility_kwh, max(0.0, renewable_allowance_kwh))
    grid_kwh = max(0.0, facility_kwh - renewable_kwh)
    wue = signal.wue_l_per_kwh if signal.wue_l_per_kwh is not None else site.wue_l_per_kwh
    market = site.market_factor_g_per_kwh
    return LedgerValues(
        gpu_hours=gpu_hours,
        it_energy_kwh=it_kwh,
        facility_energy_kwh=facility_kwh,
        energy_method=str(measurement.method),
        renewable_kwh=renewable_kwh,
        renewable_share=renewable_kwh / facility_kwh if facility_kwh > 0 else 0.0,
        grid_kwh=grid_kwh,
        carbon_g_per_kwh=signal.carbon_g_per_kwh,
        carbon_source=carbon_source,
        co2_location_g=grid_kwh * signal.carbon_g_per_kwh,
        co2_market_g=None if market is None else grid_kwh * market,
        embodied_co2_g=gpu_hours * pool.embodied_g_per_gpu_hour,
        water_onsite_l=it_kwh * wue,
        water_offsite_l=grid_kwh * site.ewif_l_per_kwh,
        cost=grid_kwh * signal.price_per_kwh,
    )


def planned_share(
    *,
    shard_requests: int,
    assignment_requests: int,
    energy_kwh: float,
    co2_g: float,
    water_l: float,
    cost: float,
) -> PlannedShare:
    """The plan's figures for a shard: its assignment's figures times its share of requests."""
    if assignment_requests <= 0:
        return PlannedShare()
    f = shard_requests / assignment_requests
    return PlannedShare(
        energy_kwh=energy_kwh * f, co2_g=co2_g * f, water_l=water_l * f, cost=cost * f
    )
