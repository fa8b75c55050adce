"""Emissions totals over ledger rows, and their GHG Protocol scope 2 and ESRS E1 views."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.review.grid_mix import GridMixSplit


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
    induced_marginal_co2_g: float
    embodied_co2_g: float
    water_onsite_l: float
    water_offsite_l: float
    cost: float
    model_load_kwh: float = 0.0  # IT energy of model loads, part of it_energy_kwh
    estimated_model_load_kwh: float = 0.0  # the part of it that is an estimate
    synthetic_rows: int = 0  # carbon from a synthetic provider (never first-hand)
    signal_fallbacks: dict[str, int] = field(default_factory=dict)  # rows per fallback kind
    lifecycle_rows: int = 0
    lifecycle_co2_g: float = 0.0  # average lifecycle figures: never scope 2
    upstream_co2_g: float = 0.0  # their upstream part (lifecycle - location): scope 3 cat. 3
    price_fallback_rows: int = 0  # cost not from a first-hand price (no-price: booked 0)


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
        "signal_fallbacks": totals.signal_fallbacks,
        "synthetic_rows": totals.synthetic_rows,
        "marginal_rows": totals.marginal_rows,
        "induced_emissions_marginal_g": totals.induced_marginal_co2_g,
        "lifecycle_rows": totals.lifecycle_rows,
        "lifecycle_co2_g": totals.lifecycle_co2_g,
        "note": (
            "Scope 2 covers purchased grid electricity. Location-based uses average operational "
            "(direct) emission factors only: where a site's signal is a marginal rate, its "
            "figure is the emissions the load induced (consequential, "
            "induced_emissions_marginal_g), never scope 2 and never 'avoided'; where it is an "
            "average lifecycle factor, its figure (lifecycle_co2_g, upstream included) is "
            "reported apart and its upstream part counted in scope 3 category 3. Those rows' "
            "scope 2 uses an average direct factor (the site's, else the zone average, "
            "labelled). Rows whose carbon intensity came from a fallback (a fallback provider, "
            "a stale cache, persistence, a configured factor, the zone average) are counted in "
            "signal_fallback_rows and by kind in signal_fallbacks; rows priced on SYNTHETIC "
            "signals in synthetic_rows. Market-based, one rule in every view: contractual "
            "instruments where they exist, the residual mix for the rest, else the "
            "location-based factor (market_based_fallback_rows: no instruments nor residual "
            "mix; market_based_partial_fallback_rows: partly covered, rest at location). "
            "Embodied hardware carbon is scope 3, reported apart."
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
            "scope_3_category_3_upstream_energy_tco2e": totals.upstream_co2_g / 1e6,
            "lifecycle_rows": totals.lifecycle_rows,
            "total_ghg_location_based_tco2e": (totals.scope2_location_g + totals.embodied_co2_g)
            / 1e6,
            "total_ghg_market_based_tco2e": (totals.scope2_market_g + totals.embodied_co2_g) / 1e6,
            "note": (
                "Scope 1 is zero: gridshift's sites burn no fuel it books. Scope 3 covers the "
                "embodied carbon of the hardware share used and, for rows priced with an "
                "average lifecycle factor, the upstream part of their electricity (category 3: "
                "lifecycle minus the average direct figure booked as scope 2; an estimate). "
                "Totals exclude category 3 where no lifecycle factor is known."
            ),
        },
        "signal_fallback_rows": totals.signal_fallback_rows,
        "synthetic_rows": totals.synthetic_rows,
        "price_fallback_rows": totals.price_fallback_rows,
        "ledger_rows": totals.rows,
        "estimated_rows": totals.estimated_rows,
    }
