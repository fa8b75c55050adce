"""Review of one batch: where and when its shards ran, what they cost, and why there and then."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import Fleet
from scheduler.domain import is_estimate as domain_is_estimate
from scheduler.pricing import reprice_grid, sum_pieces
from scheduler.review.realised import (
    asap_for_batch,
    booked_piece,
    realised,
    realised_split,
    window,
)
from scheduler.review.signals import signal_at
from scheduler.review.units import si
from scheduler.review.views import BatchReview, ShardRun, Totals
from scheduler.store.batches import get_batch
from scheduler.store.ledger import market_based_g
from scheduler.store.summaries import batch_summary
from scheduler.store.tables import AssignmentRecord, Batch, LedgerEntry, Shard


def is_estimate(method: str) -> bool:
    """Return whether an ``energy_method`` label is (or has a part that is) an estimate."""
    return domain_is_estimate(method)


def load_batch(session: Session, batch_id: str, tenant_id: str | None) -> Batch:
    """Return the batch, checking that the caller may see it.

    Raises:
        NotFound: no batch ``batch_id``, or it belongs to another tenant.
    """
    return get_batch(session, tenant_id, batch_id)


def actual_totals(rows: list[LedgerEntry], submitted: datetime) -> Totals:
    """Booked totals of ledger rows: CO2 (location-based + embodied), cost, water, energy, delay."""
    if not rows:
        return Totals()
    return Totals(
        co2_g=sum(r.co2_location_g + r.embodied_co2_g for r in rows),
        cost=sum(r.cost for r in rows),
        water_l=sum(r.water_onsite_l + r.water_offsite_l for r in rows),
        energy_kwh=sum(r.facility_energy_kwh for r in rows),
        delay_h=max((r.ended_at - submitted).total_seconds() for r in rows) / 3600.0,
    )


def asap_counterfactual(
    session: Session, rows: list[LedgerEntry], submitted: datetime, fleet: Fleet | None = None
) -> tuple[Totals, dict[str, float | None]]:
    """The rows' work had it run at once at the same site: the realised counterfactual.

    With the fleet, like for like (``scheduler.review.realised``: the submission slot's signals
    read as booking reads them, the same factor type, the counterfactual's own renewables, only
    the requests that succeeded). Without it (a caller that has no fleet), each row's grid
    energy is re-priced at the submission slot's cached intensity and price
    (``pricing.reprice_grid``), its other figures as booked; sites without a cached signal keep
    their booked figure (no saving is claimed for them).

    Returns:
        The counterfactual totals and the submission-slot intensity per site (``None`` if unknown).
    """
    longest_h = window(rows).total_seconds() / 3600.0
    if fleet is not None:
        _, total, intensity = realised(session, fleet, rows, submitted)
    else:
        intensity, price = {}, {}
        for site in sorted({r.site for r in rows}):
            intensity[site] = signal_at(session, site, "carbon_g_per_kwh", submitted)
            price[site] = signal_at(session, site, "price_per_kwh", submitted)
        total = sum_pieces(
            reprice_grid(
                booked_piece(r), carbon_g_per_kwh=intensity[r.site], price_per_kwh=price[r.site]
            )
            for r in rows
        )
    totals = Totals(
        co2_g=total.co2_g,
        cost=total.cost,
        water_l=total.water_l,
        energy_kwh=total.facility_kwh,
        delay_h=longest_h,
    )
    return totals, intensity


def saved_split(
    session: Session,
    fleet: Fleet | None,
    batch_id: str,
    rows: list[LedgerEntry],
    submitted: datetime,
) -> tuple[float | None, float | None]:
    """Realised CO2 saved (g) by place and time and by model choice
    (``scheduler.review.realised.realised_split``); (None, None) without a fleet or rows."""
    if fleet is None or not rows:
        return None, None
    asap = asap_for_batch(session, fleet, batch_id)
    split = realised_split(session, fleet, rows, submitted, asap)
    return (
        split.at_once.co2_g - split.booked.co2_g,
        split.at_once_asap_model.co2_g - split.at_once.co2_g,
    )


def _reason(
    batch: Batch, runs: list[ShardRun], actual: Totals, asap: Totals, submitted: datetime
) -> str:
    if not runs:
        return "No shards yet: the batch is waiting for a plan."
    places = sorted({f"{r.site}/{r.pool}" for r in runs})
    starts = [r.started_at or r.slot_start for r in runs]
    got = [r.carbon_g_per_kwh for r in runs if r.carbon_g_per_kwh is not None]
    at_once = [r.asap_carbon_g_per_kwh for r in runs if r.asap_carbon_g_per_kwh is not None]
    slack_h = (batch.deadline - submitted).total_seconds() / 3600.0
    text = (
        f"{len(runs)} shard(s) at {', '.join(places)} from {min(starts):%Y-%m-%d %H:%M} UTC; "
        f"its deadline allowed a window of {slack_h:.1f} h after submission."
    )
    if got and at_once:
        mean_got, mean_asap = sum(got) / len(got), sum(at_once) / len(at_once)
        text += (
            f" Intensity {mean_got:.0f} gCO2/kWh against {mean_asap:.0f} gCO2/kWh had it run"
            " at submission"
        )
        if mean_asap > 0:
            text += f" ({100.0 * (mean_got - mean_asap) / mean_asap:+.0f} %)"
        text += "."
    if actual.energy_kwh > 0 and asap.co2_g > 0:
        text += (
            f" Booked {si(actual.co2_g, 'g')} CO2 against {si(asap.co2_g, 'g')} running at once"
            " (location-based)."
        )
    return text


def batch_review(
    session: Session, batch_id: str, *, tenant_id: str | None = None, fleet: Fleet | None = None
) -> BatchReview:
    """Return where, when and why a batch's shards ran, with plan against actual.

    Args:
        session: an open session.
        batch_id: the batch.
        tenant_id: the caller's tenant (``None``: admin, any batch).
        fleet: the fleet, for the realised like-for-like counterfactual (``asap_counterfactual``).

    Raises:
        NotFound: the batch does not exist or belongs to another tenant.
    """
    batch = load_batch(session, batch_id, tenant_id)
    submitted = datetime.fromtimestamp(batch.created_at, UTC)
    shards = session.scalars(
        select(Shard).where(Shard.batch_id == batch_id).order_by(Shard.slot_start, Shard.id)
    ).all()
    rows = session.scalars(
        select(LedgerEntry).where(LedgerEntry.batch_id == batch_id).order_by(LedgerEntry.id)
    ).all()
    by_shard: dict[str, list[LedgerEntry]] = defaultdict(list)
    for r in rows:
        by_shard[r.shard_id].append(r)
    asap, asap_ci = asap_counterfactual(session, list(rows), submitted, fleet)
    runs: list[ShardRun] = []
    for s in shards:
        led = by_shard.get(s.id, [])
        energy = sum(r.facility_energy_kwh for r in led) if led else None
        grid = sum(r.grid_kwh for r in led)
        runs.append(
            ShardRun(
                shard_id=s.id,
                site=s.site,
                pool=s.pool,
                model=s.model,
                status=s.status,
                slot_start=s.slot_start,
                started_at=s.started_at,
                finished_at=s.finished_at,
                requests=s.request_count,
                attempts=s.attempts,
                carbon_g_per_kwh=(
                    sum(r.co2_location_g for r in led) / grid
                    if led and grid > 0
                    else (led[-1].carbon_g_per_kwh if led else _planned_ci(session, s))
                ),
                asap_carbon_g_per_kwh=asap_ci.get(s.site)
                if s.site in asap_ci
                else signal_at(session, s.site, "carbon_g_per_kwh", submitted),
                energy_kwh=energy,
                co2_g=sum(r.co2_location_g + r.embodied_co2_g for r in led) if led else None,
                water_l=sum(r.water_onsite_l + r.water_offsite_l for r in led) if led else None,
                cost=sum(r.cost for r in led) if led else None,
                energy_method=led[-1].energy_method if led else None,
                estimated=any(is_estimate(r.energy_method) for r in led),
                planned_energy_kwh=s.planned_energy_kwh,
                planned_co2_g=s.planned_co2_g,
            )
        )
    planned = planned_totals(session, batch_id)
    actual = actual_totals(list(rows), submitted)
    methods = sorted({r.energy_method for r in rows})
    by_place, by_model = saved_split(session, fleet, batch_id, list(rows), submitted)
    return BatchReview(
        batch_id=batch.id,
        tenant_id=batch.tenant_id,
        status=batch.status,
        submitted_at=submitted,
        deadline=batch.deadline,
        shards=runs,
        planned=planned,
        actual=actual,
        asap_counterfactual=asap,
        embodied_co2_g=sum(r.embodied_co2_g for r in rows),
        co2_market_g=market_based_g(rows) if rows else None,
        energy_methods=methods,
        estimated=any(is_estimate(m) for m in methods),
        reason=_reason(batch, runs, actual, asap, submitted),
        saved_co2_g_by_place_and_time=by_place,
        saved_co2_g_by_model_choice=by_model,
    )


def _planned_ci(session: Session, shard: Shard) -> float | None:
    if shard.assignment_id is not None:
        a = session.get(AssignmentRecord, shard.assignment_id)
        if a is not None and a.carbon_g_per_kwh is not None:
            return a.carbon_g_per_kwh
    return signal_at(session, shard.site, "carbon_g_per_kwh", shard.slot_start)


def planned_totals(session: Session, batch_id: str) -> Totals:
    """The batch's planned figures, exactly as its summary's ``planned`` (one source of truth).

    Each shard at the assignment it was cut from plus the current plan's uncut assignments
    (``scheduler.store.summaries``), so the review, the batch object and the dashboard agree.
    """
    p = batch_summary(session, batch_id)["planned"]
    return Totals(
        co2_g=p["co2_g"], cost=p["cost"], water_l=p["water_l"], energy_kwh=p["energy_kwh"]
    )
