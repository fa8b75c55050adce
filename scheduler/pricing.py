"""The one pricing rule: energy, renewables, grid, CO2, water and cost of work at a site and slot.

Every figure gridshift shows (plan totals, validation, per-batch attribution, the planned
figures of an assignment, the ledger's booked figures, summaries and reports) is computed here,
so a kWh is priced the same way wherever it appears. Pure and dependency-free: imports only
the domain (no PuLP, HiGHS or numpy), so workers and the review load nothing of the planner
(``scheduler.optimizer.pricing`` re-exports it and adds ``price_problem``).

Energy of a piece (planning-formats.md section 4)::

    gpu_hours    = gpus * (I / prefill_tok_s + O / decode_tok_s) / 3600
    it_kwh       = gpu_hours * power_w / 1000          (or a measured IT energy)
    facility_kwh = it_kwh * pue

Allocation of a site-slot's renewables (``R h = renewable_kw * slot_hours``, the whole slot,
as the contract and the LP count it) over several pieces, written once:

1. Work already committed in the site-slot (queued, running or done: the plan's fixed load)
   draws renewables first.
2. The new pieces share what is left **in proportion to their facility energy**::

       left        = max(0, R h - F_fixed)
       renewable_i = min(F_new, left) * F_i / F_new
       grid_i      = F_i - renewable_i

   so ``sum grid_i = max(0, F_fixed + F_new - R h) - max(0, F_fixed - R h)``: exactly the
   contract's plan totals, and a piece's figure does not depend on the order it is listed in.
3. The ledger books a piece that runs in its planned site-slot with the renewables the plan gave
   it (scaled if the slot's renewables turned out different), capped by what other attempts have
   not yet booked in that slot; a piece that runs elsewhere gets what is left, first come.

Per piece, with the slot's signal (carbon ``c``, price ``p``, WUE ``w`` defaulting to the
site's, EWIF ``e``)::

    co2_location_g  = grid_kwh * c              (operational, location-based)
    co2_market_g    = grid_kwh * market factor  (instruments, residual mix, else location)
    embodied_co2_g  = gpu_hours * embodied_g_per_gpu_hour(pool)
    water_onsite_l  = it_kwh * w
    water_offsite_l = grid_kwh * e
    cost            = grid_kwh * p
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from scheduler.domain import Assignment, Fleet, Pool, Profile, Site, SlotSignal

SiteSlot = tuple[str, datetime]


@dataclass(frozen=True, slots=True)
class PieceEnergy:
    """Energy of one piece of work: GPU-hours, IT and facility energy (kWh)."""

    gpu_hours: float
    it_kwh: float
    facility_kwh: float


@dataclass(frozen=True, slots=True)
class PricedPiece:
    """One piece of work priced by the module's rule.

    Energies in kWh, CO2 in grams, water in litres, cost in the fleet's currency.
    ``co2_location_g`` is operational (grid) CO2 only; ``co2_g`` adds embodied CO2.
    """

    gpu_hours: float
    it_kwh: float
    facility_kwh: float
    renewable_kwh: float
    grid_kwh: float
    carbon_g_per_kwh: float
    co2_location_g: float
    co2_market_g: float | None
    embodied_co2_g: float
    water_onsite_l: float
    water_offsite_l: float
    cost: float

    @property
    def co2_g(self) -> float:
        """Operational (location-based) plus embodied CO2 in grams."""
        return self.co2_location_g + self.embodied_co2_g

    @property
    def water_l(self) -> float:
        """On-site plus off-site water in litres."""
        return self.water_onsite_l + self.water_offsite_l

    def scaled(self, factor: float) -> PricedPiece:
        """The same piece's figures times ``factor`` (a share of its requests)."""
        return PricedPiece(
            gpu_hours=self.gpu_hours * factor,
            it_kwh=self.it_kwh * factor,
            facility_kwh=self.facility_kwh * factor,
            renewable_kwh=self.renewable_kwh * factor,
            grid_kwh=self.grid_kwh * factor,
            carbon_g_per_kwh=self.carbon_g_per_kwh,
            co2_location_g=self.co2_location_g * factor,
            co2_market_g=None if self.co2_market_g is None else self.co2_market_g * factor,
            embodied_co2_g=self.embodied_co2_g * factor,
            water_onsite_l=self.water_onsite_l * factor,
            water_offsite_l=self.water_offsite_l * factor,
            cost=self.cost * factor,
        )


ZERO = PricedPiece(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, 0.0, 0.0, 0.0, 0.0)
"""The price of a piece that cannot be priced (unknown site, pool, model or slot)."""


def piece_gpu_hours(profile: Profile, input_tokens: float, output_tokens: float) -> float:
    """GPU-hours of a piece: ``gpus * (I / prefill_tok_s + O / decode_tok_s) / 3600``."""
    return (
        profile.gpus
        * (input_tokens / profile.prefill_tok_s + output_tokens / profile.decode_tok_s)
        / 3600.0
    )


def energy_from_gpu_hours(profile: Profile, pue: float, gpu_hours: float) -> PieceEnergy:
    """IT energy ``gpu_hours * power_w / 1000`` and facility energy ``it_kwh * pue``."""
    return energy_from_it(gpu_hours, gpu_hours * profile.power_w / 1000.0, pue)


def energy_from_it(gpu_hours: float, it_kwh: float, pue: float) -> PieceEnergy:
    """A piece with a known (e.g. measured) IT energy: facility energy ``it_kwh * pue``."""
    return PieceEnergy(gpu_hours=gpu_hours, it_kwh=it_kwh, facility_kwh=it_kwh * pue)


def energy_from_tokens(
    profile: Profile, pue: float, input_tokens: float, output_tokens: float
) -> PieceEnergy:
    """The planner's token model: GPU-hours, IT and facility energy of a piece."""
    return energy_from_gpu_hours(
        profile, pue, piece_gpu_hours(profile, input_tokens, output_tokens)
    )


def busy_it_kwh(gpus: int, power_w: float, seconds: float) -> float:
    """Busy-time IT energy estimate: ``gpus * power_w * seconds`` in kWh."""
    return gpus * power_w * seconds / 3_600_000.0


def embodied_g(pool: Pool, gpu_hours: float) -> float:
    """Embodied CO2 of ``gpu_hours`` on ``pool``: ``gpu_hours * embodied_g_per_gpu_hour``."""
    return gpu_hours * pool.embodied_g_per_gpu_hour


def grid_co2_g(grid_kwh: float, g_per_kwh: float) -> float:
    """CO2 of grid energy at a factor of any type (``grid_kwh * g_per_kwh``)."""
    return grid_kwh * g_per_kwh


def onsite_water_l(site: Site, facility_kwh: float, wue_l_per_kwh: float) -> float:
    """On-site water of a load known by its facility energy: ``facility / pue * wue``."""
    return facility_kwh / site.pue * wue_l_per_kwh


def offsite_water_l(site: Site, grid_kwh: float) -> float:
    """Off-site water of grid energy: ``grid_kwh * ewif_l_per_kwh``."""
    return grid_kwh * site.ewif_l_per_kwh


def committed_water_l(
    site: Site, wue_l_per_kwh: float, facility_kwh: float, grid_kwh: float
) -> float:
    """Water of committed (fixed) load: on-site from its IT energy plus off-site from its grid."""
    return onsite_water_l(site, facility_kwh, wue_l_per_kwh) + offsite_water_l(site, grid_kwh)


def renewable_over_kwh(renewable_kw: float, hours: float) -> float:
    """Panel output over ``hours`` at ``renewable_kw`` (negative power and time count as 0)."""
    return max(0.0, renewable_kw) * max(0.0, hours)


def renewable_allowance(
    renewable_kw: float,
    *,
    duration_h: float,
    slot_hours: float,
    already_booked_kwh: float,
    planned: tuple[float, float, float] | None = None,
    facility_kwh: float | None = None,
) -> float:
    """Rule 3: renewables one execution may claim (``workers.ledger.renewable_allowance_kwh``).

    ``planned`` is ``(renewable_kwh, renewable_kw, facility_kwh)`` the plan gave the piece in
    its planned site-slot: it claims those renewables scaled by the slot's renewables now known
    against planned and by its booked facility energy against planned. Otherwise it claims the
    panel output over its run. Never more than the slot's renewables left after other attempts.
    """
    left = max(0.0, renewable_over_kwh(renewable_kw, slot_hours) - max(0.0, already_booked_kwh))
    if planned is None:
        return min(renewable_over_kwh(renewable_kw, duration_h), left)
    planned_kwh, planned_kw, planned_facility = planned
    want = planned_kwh * (max(0.0, renewable_kw) / planned_kw) if planned_kw > 0 else 0.0
    if facility_kwh is not None and planned_facility > 0:
        want *= max(0.0, facility_kwh) / planned_facility
    return min(want, left)


def slot_renewable_kwh(signal: SlotSignal, slot_hours: float) -> float:
    """Renewable energy of a whole site-slot: ``max(0, renewable_kw) * slot_hours``."""
    return max(0.0, signal.renewable_kw) * slot_hours


def renewables_left_kwh(slot_renewable: float, committed_facility_kwh: float) -> float:
    """Renewables left in a site-slot for new pieces after the committed load (rule 1)."""
    return max(0.0, slot_renewable - max(0.0, committed_facility_kwh))


def share_renewables(facility_kwh: Sequence[float], left_kwh: float) -> list[float]:
    """Rule 2: renewables of each new piece in one site-slot, in proportion to facility energy."""
    total = sum(facility_kwh)
    if total <= 0.0:
        return [0.0 for _ in facility_kwh]
    used = min(total, max(0.0, left_kwh))
    return [used * f / total for f in facility_kwh]


MARKET_INSTRUMENTS = "instruments"
MARKET_INSTRUMENTS_RESIDUAL = "instruments+residual"
MARKET_INSTRUMENTS_LOCATION = "instruments+location"
MARKET_RESIDUAL = "residual"
MARKET_LOCATION = "location"
MARKET_PARTIAL_FALLBACK = frozenset({MARKET_INSTRUMENTS_LOCATION})
"""Market bases whose uncovered rest is priced at the location-based factor (a partial fallback)."""


def market_basis(site: Site) -> str:
    """What the site's market-based figure rests on (``market_g_per_kwh``'s hierarchy).

    ``instruments`` (all covered), ``instruments+residual``, ``instruments+location`` (partly
    covered, the rest at the location-based factor: a partial location fallback), ``residual``
    (no instruments) or ``location`` (neither: the location-based figure, the fallback).
    """
    factor, residual = site.market_factor_g_per_kwh, site.residual_mix_g_per_kwh
    if factor is None:
        return MARKET_LOCATION if residual is None else MARKET_RESIDUAL
    covered = site.market_share_covered if site.market_share_covered is not None else 1.0
    if covered >= 1.0:
        return MARKET_INSTRUMENTS
    return MARKET_INSTRUMENTS_LOCATION if residual is None else MARKET_INSTRUMENTS_RESIDUAL


def market_g_per_kwh(site: Site, location_g_per_kwh: float) -> float | None:
    """The site's market-based factor (GHG Protocol scope 2 hierarchy), g/kWh.

    Contractual instruments cover ``market_share_covered`` (default all) of the grid energy at
    ``market_factor_g_per_kwh``; the rest is priced at the ``residual_mix_g_per_kwh``, else at
    the location-based factor. A site with neither instruments nor a residual mix is priced
    at the location-based factor (the GHG Protocol's documented fallback; its rows say
    ``market_basis: location`` and reports count them), so every view sums one market-based
    figure per row and gets one answer.
    """
    factor, residual = site.market_factor_g_per_kwh, site.residual_mix_g_per_kwh
    if factor is None and residual is None:
        return location_g_per_kwh
    covered = (
        0.0
        if factor is None
        else (site.market_share_covered if site.market_share_covered is not None else 1.0)
    )
    rest = residual if residual is not None else location_g_per_kwh
    return covered * (factor or 0.0) + (1.0 - covered) * rest


def price_piece(
    *,
    site: Site,
    pool: Pool,
    signal: SlotSignal,
    energy: PieceEnergy,
    renewable_kwh: float,
    market_factor_g_per_kwh: float | None = None,
) -> PricedPiece:
    """Price one piece with the renewables allocated to it (see the module docstring).

    Args:
        site: where it runs (PUE is already in ``energy``; WUE, EWIF, market factor here).
        pool: the pool (embodied CO2 per GPU-hour).
        signal: the slot's carbon, price, renewables and optional WUE.
        energy: the piece's GPU-hours, IT and facility energy.
        renewable_kwh: renewables allocated to it (capped at its facility energy).
        market_factor_g_per_kwh: market-based factor to use (default: ``market_g_per_kwh``
            of the site).

    Returns:
        The priced piece.
    """
    facility = max(0.0, energy.facility_kwh)
    renewable = min(facility, max(0.0, renewable_kwh))
    grid = facility - renewable
    wue = signal.wue_l_per_kwh if signal.wue_l_per_kwh is not None else site.wue_l_per_kwh
    market = market_factor_g_per_kwh
    if market is None:
        market = market_g_per_kwh(site, signal.carbon_g_per_kwh)
    return PricedPiece(
        gpu_hours=energy.gpu_hours,
        it_kwh=energy.it_kwh,
        facility_kwh=facility,
        renewable_kwh=renewable,
        grid_kwh=grid,
        carbon_g_per_kwh=signal.carbon_g_per_kwh,
        co2_location_g=grid * signal.carbon_g_per_kwh,
        co2_market_g=None if market is None else grid * market,
        embodied_co2_g=energy.gpu_hours * pool.embodied_g_per_gpu_hour,
        water_onsite_l=energy.it_kwh * wue,
        water_offsite_l=grid * site.ewif_l_per_kwh,
        cost=grid * signal.price_per_kwh,
    )


def reprice_grid(
    piece: PricedPiece, *, carbon_g_per_kwh: float | None, price_per_kwh: float | None
) -> PricedPiece:
    """The same piece's grid energy priced at another slot's carbon intensity and price.

    A counterfactual at the same site (e.g. run at submission): energy, renewables, embodied
    CO2, water and the market-based figure stay; location-based CO2 and cost follow the other
    slot's signals as ``price_piece`` prices them. ``None`` (signal unknown) keeps the piece's
    own figure, so no saving is claimed from a missing signal.
    """
    ci = piece.carbon_g_per_kwh if carbon_g_per_kwh is None else carbon_g_per_kwh
    return replace(
        piece,
        carbon_g_per_kwh=ci,
        co2_location_g=piece.co2_location_g
        if carbon_g_per_kwh is None
        else piece.grid_kwh * carbon_g_per_kwh,
        cost=piece.cost if price_per_kwh is None else piece.grid_kwh * price_per_kwh,
    )


def reprice_at(
    piece: PricedPiece,
    *,
    carbon_g_per_kwh: float,
    price_per_kwh: float,
    renewable_kwh: float,
) -> PricedPiece:
    """The same booked piece run in another slot at the same site, with that slot's renewables.

    A realised counterfactual (docs/review.md, "Realised savings"): energy, embodied CO2 and
    on-site water stay as booked; the other slot's on-site renewables (capped at the facility
    energy) set its grid energy, which is priced at that slot's carbon intensity and price;
    off-site water and the market-based figure follow the grid energy at the piece's own
    factors per grid kWh.
    """
    renewable = min(piece.facility_kwh, max(0.0, renewable_kwh))
    grid = piece.facility_kwh - renewable
    ratio = grid / piece.grid_kwh if piece.grid_kwh > 0 else None
    return replace(
        piece,
        renewable_kwh=renewable,
        grid_kwh=grid,
        carbon_g_per_kwh=carbon_g_per_kwh,
        co2_location_g=grid * carbon_g_per_kwh,
        co2_market_g=None
        if piece.co2_market_g is None or ratio is None
        else piece.co2_market_g * ratio,
        water_offsite_l=piece.water_offsite_l if ratio is None else piece.water_offsite_l * ratio,
        cost=grid * price_per_kwh,
    )


def on_model(
    piece: PricedPiece, ran: Profile, other: Profile, input_tokens: float, output_tokens: float
) -> PricedPiece:
    """The same piece run on another model's profile (same site, slot and signals).

    Energy, renewables, grid, CO2, water and cost scale by the token model's IT-energy ratio
    ``it_kwh(other) / it_kwh(ran)`` on the piece's tokens; GPU-hours and embodied CO2 by the
    GPU-hour ratio. A piece whose tokens price to no energy on ``ran`` is returned unchanged.
    """
    was = energy_from_tokens(ran, 1.0, input_tokens, output_tokens)
    now = energy_from_tokens(other, 1.0, input_tokens, output_tokens)
    if was.it_kwh <= 0.0 or was.gpu_hours <= 0.0:
        return piece
    gpu_ratio = now.gpu_hours / was.gpu_hours
    return replace(
        piece.scaled(now.it_kwh / was.it_kwh),
        gpu_hours=piece.gpu_hours * gpu_ratio,
        embodied_co2_g=piece.embodied_co2_g * gpu_ratio,
    )


def _where(fleet: Fleet, a: Assignment) -> tuple[Site, Pool, Profile] | None:
    site = next((s for s in fleet.sites if s.name == a.site), None)
    pool = next((p for p in site.pools if p.name == a.pool), None) if site else None
    model = next((m for m in fleet.models if m.name == a.model), None)
    profile = model.profiles.get(pool.gpu) if model and pool else None
    if site is None or pool is None or profile is None:
        return None
    return site, pool, profile


def piece_energy(fleet: Fleet, a: Assignment) -> PieceEnergy | None:
    """Token-model energy of an assignment, or None for an unknown site, pool or model."""
    where = _where(fleet, a)
    if where is None:
        return None
    site, _, profile = where
    return energy_from_tokens(profile, site.pue, a.input_tokens, a.output_tokens)


def price_assignments(
    fleet: Fleet,
    signals: Mapping[SiteSlot, SlotSignal],
    assignments: Iterable[Assignment],
    committed_facility_kwh: Mapping[SiteSlot, float] | None = None,
) -> list[PricedPiece]:
    """Price a set of pieces planned together, by the module's allocation rule.

    Energy comes from each assignment's tokens (the token model), not from its reported
    ``energy_kwh``, so a checker that calls this re-prices the plan independently of the
    solver.

    Args:
        fleet: sites, pools and models.
        signals: ``signals[(site, slot)]``.
        assignments: the pieces (a plan's assignments or a baseline placement).
        committed_facility_kwh: facility energy already committed per site-slot (fixed load).

    Returns:
        One priced piece per assignment, in input order. A piece naming an unknown site, pool,
        model or a pool the model has no profile for, or a slot without a signal, is ``ZERO``.
    """
    committed = committed_facility_kwh or {}
    items = list(assignments)
    energies: list[tuple[Site, Pool, PieceEnergy] | None] = []
    groups: dict[SiteSlot, list[int]] = defaultdict(list)
    for i, a in enumerate(items):
        where = _where(fleet, a)
        if where is None or (a.site, a.slot) not in signals:
            energies.append(None)
            continue
        site, pool, profile = where
        energies.append((site, pool, energy_from_tokens(profile, site.pue, *_tokens(a))))
        groups[(a.site, a.slot)].append(i)
    out = [ZERO] * len(items)
    for key, idx in groups.items():
        signal = signals[key]
        left = renewables_left_kwh(
            slot_renewable_kwh(signal, fleet.slot_hours), committed.get(key, 0.0)
        )
        facility = [_energy(energies[i]).facility_kwh for i in idx]
        for i, renewable in zip(idx, share_renewables(facility, left), strict=True):
            found = energies[i]
            assert found is not None  # grouped only when priced
            site, pool, energy = found
            out[i] = price_piece(
                site=site, pool=pool, signal=signal, energy=energy, renewable_kwh=renewable
            )
    return out


def _tokens(a: Assignment) -> tuple[float, float]:
    return a.input_tokens, a.output_tokens


def _energy(found: tuple[Site, Pool, PieceEnergy] | None) -> PieceEnergy:
    return found[2] if found is not None else PieceEnergy(0.0, 0.0, 0.0)


def committed_grid_kwh(
    signal: SlotSignal, slot_hours: float, committed_facility_kwh: float
) -> float:
    """Grid energy of the committed load alone: ``max(0, F_fixed - R h)``."""
    return max(0.0, committed_facility_kwh - slot_renewable_kwh(signal, slot_hours))


def sum_pieces(pieces: Iterable[PricedPiece]) -> PricedPiece:
    """Add priced pieces up (``carbon_g_per_kwh`` becomes the grid-weighted mean)."""
    acc = [0.0] * 11
    market: float | None = None
    for p in pieces:
        for i, v in enumerate(
            (
                p.gpu_hours,
                p.it_kwh,
                p.facility_kwh,
                p.renewable_kwh,
                p.grid_kwh,
                p.co2_location_g,
                p.embodied_co2_g,
                p.water_onsite_l,
                p.water_offsite_l,
                p.cost,
            )
        ):
            acc[i] += v
        if p.co2_market_g is not None:
            market = (market or 0.0) + p.co2_market_g
    grid = acc[4]
    return PricedPiece(
        gpu_hours=acc[0],
        it_kwh=acc[1],
        facility_kwh=acc[2],
        renewable_kwh=acc[3],
        grid_kwh=grid,
        carbon_g_per_kwh=acc[5] / grid if grid > 0 else 0.0,
        co2_location_g=acc[5],
        co2_market_g=market,
        embodied_co2_g=acc[6],
        water_onsite_l=acc[7],
        water_offsite_l=acc[8],
        cost=acc[9],
    )
