"""Realised savings: what ran (the ledger) against the same work run at once, like for like.

The counterfactual of a ledger row is the same booked energy (same model, same tokens, same
measured or estimated IT energy) run at the same site in the slot the batch was submitted in,
priced by the booking's own rules (docs/review.md, "Realised savings"):

- the same actuals and resolution: the submission slot's signals are read exactly as booking
  reads a slot (``scheduler.dispatch.signals.ledger_signal``: the slot's mean, actual before
  forecast, the configured provider then its fallback), never the latest 15-minute point;
- the same factor type: location-based CO2 with an average direct factor on both sides (a
  marginal or lifecycle site's counterfactual uses the same average the row was booked with,
  so nothing moves where nothing could);
- the counterfactual's own on-site renewables: the panels' output in the submission slot over
  the row's run time (none at an hour without sun), not the share the shard got;
- only requests that succeeded: a row's saving is scaled by its share of succeeded requests,
  so a batch whose every request failed is credited nothing;
- no saving from a missing signal: where the submission slot has no first-hand carbon figure
  (only the site factor or the zone average) the row keeps its booked figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from scheduler.domain import CarbonFactor, Fleet, Profile, SlotSignal
from scheduler.pricing import PricedPiece, on_model, renewable_over_kwh, reprice_at, sum_pieces
from scheduler.store.tables import LedgerEntry

SignalLookup = Callable[[str, datetime], "tuple[SlotSignal, str] | None"]
"""(site, slot) -> (signal, label): as ``scheduler.dispatch.signals.SignalLookup``."""

NO_FIRST_HAND = frozenset({"site-factor", "zone-average"})
"""Booking fallbacks that are not a signal of the slot: no saving is claimed against them."""


@dataclass(frozen=True, slots=True)
class SubmissionSignal:
    """Carbon, price and on-site renewables of a site's submission slot (None: unknown)."""

    carbon_g_per_kwh: float | None
    price_per_kwh: float | None
    renewable_kw: float
    carbon_factor: str = CarbonFactor.AVERAGE_DIRECT.value
    average_g_per_kwh: float | None = None


def submission_signal(
    session: Session, fleet: Fleet, site: str, slot: datetime, lookup: SignalLookup | None = None
) -> SubmissionSignal:
    """The signals a row run in ``slot`` at ``site`` would have been booked with (``lookup``:
    the booking's injected signals, as the demo books with the night's actuals)."""
    from scheduler.dispatch.signals import ledger_signal

    booking = ledger_signal(session, fleet, site, slot, None, lookup=lookup)
    sig = booking.signal
    known = booking.fallback not in NO_FIRST_HAND
    return SubmissionSignal(
        carbon_g_per_kwh=sig.carbon_g_per_kwh if known else None,
        price_per_kwh=None if booking.price_fallback == "no-price" else sig.price_per_kwh,
        renewable_kw=sig.renewable_kw,
        carbon_factor=sig.carbon_factor,
        average_g_per_kwh=booking.average_g_per_kwh,
    )


def booked_piece(r: LedgerEntry) -> PricedPiece:
    """A ledger row as the priced piece it was booked as (``scheduler.pricing``)."""
    return PricedPiece(
        gpu_hours=r.gpu_hours,
        it_kwh=r.it_energy_kwh,
        facility_kwh=r.facility_energy_kwh,
        renewable_kwh=max(0.0, r.facility_energy_kwh - r.grid_kwh),
        grid_kwh=r.grid_kwh,
        carbon_g_per_kwh=r.carbon_g_per_kwh,
        co2_location_g=r.co2_location_g,
        co2_market_g=r.co2_market_g,
        embodied_co2_g=r.embodied_co2_g,
        water_onsite_l=r.water_onsite_l,
        water_offsite_l=r.water_offsite_l,
        cost=r.cost,
    )


def succeeded_share(r: LedgerEntry) -> float:
    """Share of a row's requests that succeeded (0 when none did, or it ran none)."""
    total = r.requests_done + r.requests_failed
    return r.requests_done / total if total > 0 else 0.0


def _booked_average_g_per_kwh(r: LedgerEntry) -> float:
    """The average direct factor the row's location-based CO2 was priced with."""
    return r.co2_location_g / r.grid_kwh if r.grid_kwh > 0 else r.carbon_g_per_kwh


def counterfactual_piece(
    r: LedgerEntry, sig: SubmissionSignal, model: tuple[Profile, Profile] | None = None
) -> PricedPiece:
    """One row's "had it run at once" piece, like for like (module docstring).

    The succeeded share is re-priced at the submission slot; the failed share keeps its booked
    figure (it saves nothing either way). ``model`` = (profile it ran on, profile of the model
    it would have run on at once): the succeeded share is first moved to that model with
    ``pricing.on_model`` (the token model's energy ratio on the row's tokens).
    """
    booked = booked_piece(r)
    share = succeeded_share(r)
    if sig.carbon_g_per_kwh is None or share == 0.0:
        return booked
    average_row = (r.carbon_factor or CarbonFactor.AVERAGE_DIRECT.value) != (
        CarbonFactor.AVERAGE_DIRECT.value
    )
    if average_row or sig.carbon_factor != CarbonFactor.AVERAGE_DIRECT.value:
        # the row's scope 2 figure used an average stand-in for a marginal or lifecycle
        # signal: the counterfactual uses the same stand-in (same factor type, same source)
        carbon = _booked_average_g_per_kwh(r)
    else:
        carbon = sig.carbon_g_per_kwh
    price = sig.price_per_kwh
    if price is None:  # no price at submission: the booked price per grid kWh (no saving)
        price = booked.cost / booked.grid_kwh if booked.grid_kwh > 0 else 0.0
    duration_h = max(0.0, (r.ended_at - r.started_at).total_seconds()) / 3600.0
    run = booked.scaled(share)
    if model is not None:
        run = on_model(run, *model, r.input_tokens * share, r.output_tokens * share)
    moved = reprice_at(
        run,
        carbon_g_per_kwh=carbon,
        price_per_kwh=price,
        renewable_kwh=renewable_over_kwh(sig.renewable_kw, duration_h) * share,
    )
    return sum_pieces([moved, booked.scaled(1.0 - share)])


def realised(
    session: Session,
    fleet: Fleet,
    rows: list[LedgerEntry],
    submitted: datetime,
    lookup: SignalLookup | None = None,
) -> tuple[PricedPiece, PricedPiece, dict[str, float | None]]:
    """Booked and counterfactual totals of ledger rows, and each site's submission intensity.

    Args:
        session: an open session (the forecast cache).
        fleet: the fleet (slot length, signal sources, factor types).
        rows: the ledger rows of one batch (or any rows submitted at ``submitted``).
        submitted: when the batch was submitted.
        lookup: the signals booking was given instead of the cache (the demo's actuals).

    Returns:
        (booked, counterfactual, intensity per site at submission or None when unknown).
    """
    from scheduler.slots import slot_floor

    slot = slot_floor(submitted, fleet.slot_minutes)
    known = {s.name for s in fleet.sites}
    signals = {
        site: submission_signal(session, fleet, site, slot, lookup)
        for site in sorted({r.site for r in rows} & known)
    }
    unknown = SubmissionSignal(None, None, 0.0)
    booked = sum_pieces(booked_piece(r) for r in rows)
    counter = sum_pieces(counterfactual_piece(r, signals.get(r.site, unknown)) for r in rows)
    intensity = {
        site: signals.get(site, unknown).carbon_g_per_kwh for site in {r.site for r in rows}
    }
    return booked, counter, intensity


@dataclass(frozen=True, slots=True)
class RealisedSplit:
    """Booked figures against two "run at once" counterfactuals (docs/review.md).

    ``at_once`` keeps the model each row ran; ``at_once_asap_model`` runs it on the model the
    batch would have used at once (asap's: the model it named, else the largest allowed model
    with a profile on the row's pool). ``at_once - booked`` is saved by place and time;
    ``at_once_asap_model - at_once`` by model choice.
    """

    booked: PricedPiece
    at_once: PricedPiece
    at_once_asap_model: PricedPiece
    model_changes: tuple[tuple[str, str], ...]  # (asap's model, model it ran) where they differ


def asap_model(
    fleet: Fleet, named: str | None, min_quality: float | None, pool_gpu: str
) -> str | None:
    """The model asap would have run: the named one, else the highest-quality allowed model
    (quality >= ``min_quality``, not an embedding model) with a profile for ``pool_gpu``."""
    if named is not None:
        return named
    floor = min_quality if min_quality is not None else float("-inf")
    ok = [
        m
        for m in fleet.models
        if m.quality >= floor - 1e-12 and not m.embeds and pool_gpu in m.profiles
    ]
    return max(ok, key=lambda m: m.quality).name if ok else None


def asap_for_batch(
    session: Session, fleet: Fleet, batch_id: str
) -> Callable[[LedgerEntry], str | None]:
    """``asap(row)`` for a batch's rows: a row on a model one of its parts named ran the named
    model; otherwise the batch's ``auto`` part gives asap's choice (``asap_model`` on the row's
    pool)."""
    from sqlalchemy import select

    from scheduler.store.tables import BatchPart

    parts = list(session.scalars(select(BatchPart).where(BatchPart.batch_id == batch_id)))
    named = {p.model for p in parts if p.model is not None}
    auto = next((p for p in parts if p.model is None), None)
    gpus = {(s.name, p.name): p.gpu for s in fleet.sites for p in s.pools}

    def asap(r: LedgerEntry) -> str | None:
        if r.model in named or auto is None or (r.site, r.pool) not in gpus:
            return r.model
        floor = auto.min_quality if auto.min_quality is not None else fleet.default_min_quality
        return asap_model(fleet, None, floor, gpus[(r.site, r.pool)])

    return asap


def realised_split(
    session: Session,
    fleet: Fleet,
    rows: list[LedgerEntry],
    submitted: datetime,
    asap: Callable[[LedgerEntry], str | None],
    lookup: SignalLookup | None = None,
) -> RealisedSplit:
    """``realised`` split into "by place and time" and "by model choice" (``RealisedSplit``).

    ``asap(row)`` names the model the row's work would have run on at once (``asap_model``);
    a row whose asap model is unknown or has no profile on the row's pool keeps its model.
    """
    from scheduler.slots import slot_floor

    slot = slot_floor(submitted, fleet.slot_minutes)
    known = {s.name for s in fleet.sites}
    signals = {
        site: submission_signal(session, fleet, site, slot, lookup)
        for site in sorted({r.site for r in rows} & known)
    }
    unknown = SubmissionSignal(None, None, 0.0)
    same, other, changes = [], [], set()
    for r in rows:
        sig = signals.get(r.site, unknown)
        same.append(counterfactual_piece(r, sig))
        profiles = _profiles(fleet, r, asap(r))
        other.append(counterfactual_piece(r, sig, profiles) if profiles else same[-1])
        if profiles:
            changes.add((asap(r) or "", r.model))
    return RealisedSplit(
        booked=sum_pieces(booked_piece(r) for r in rows),
        at_once=sum_pieces(same),
        at_once_asap_model=sum_pieces(other),
        model_changes=tuple(sorted(changes)),
    )


def _profiles(fleet: Fleet, r: LedgerEntry, name: str | None) -> tuple[Profile, Profile] | None:
    """(profile the row ran on, asap model's profile on the same pool) where the models differ."""
    if name is None or name == r.model:
        return None
    site = next((s for s in fleet.sites if s.name == r.site), None)
    pool = next((p for p in site.pools if p.name == r.pool), None) if site else None
    ran = next((m for m in fleet.models if m.name == r.model), None)
    other = next((m for m in fleet.models if m.name == name), None)
    if pool is None or ran is None or other is None:
        return None
    a, b = ran.profiles.get(pool.gpu), other.profiles.get(pool.gpu)
    return (a, b) if a is not None and b is not None else None


def window(rows: list[LedgerEntry]) -> timedelta:
    """The longest run among the rows (the counterfactual's delay: run at once)."""
    return max((r.ended_at - r.started_at for r in rows), default=timedelta(0))
