"""What workers observed per model and GPU type, read from the ledger (for self-calibration)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from scheduler.domain import Fleet
from scheduler.optimizer.calibration import Observed
from scheduler.store.ledger import seconds_between
from scheduler.store.tables import LedgerEntry


def observed_profiles(s: Session, fleet: Fleet) -> dict[tuple[str, str], Observed]:
    """Sums of tokens, busy seconds and measured energy per (model, GPU type), from the ledger.

    Rows of sites or pools the fleet no longer has are skipped. Busy time is the meter's window
    (engine run, model load excluded); measured energy counts only ``measured-*`` rows.
    """
    L = LedgerEntry
    # wholly measured rows only: a measured window plus an estimated model load is not
    measured = L.energy_method.like("measured%") & L.energy_method.not_like("%estimated%")
    rows = s.execute(
        select(
            L.site,
            L.pool,
            L.model,
            func.count(),
            func.coalesce(func.sum(L.input_tokens), 0),
            func.coalesce(func.sum(L.output_tokens), 0),
            func.coalesce(func.sum(seconds_between(s, L.started_at, L.ended_at)), 0.0),
            func.coalesce(func.sum(case((measured, 1), else_=0)), 0),
            func.coalesce(func.sum(case((measured, L.input_tokens), else_=0)), 0),
            func.coalesce(func.sum(case((measured, L.output_tokens), else_=0)), 0),
            func.coalesce(func.sum(case((measured, L.it_energy_kwh), else_=0.0)), 0.0),
        ).group_by(L.site, L.pool, L.model)
    ).all()
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * 8)
    for site, pool, model, *values in rows:
        try:
            gpu = fleet.site(site).pool(pool).gpu
        except KeyError:
            continue
        sums = acc[(model, gpu)]
        for i, v in enumerate(values):
            sums[i] += float(v or 0)
    return {
        key: Observed(
            attempts=int(v[0]),
            input_tokens=v[1],
            output_tokens=v[2],
            busy_s=v[3],
            measured_attempts=int(v[4]),
            measured_input_tokens=v[5],
            measured_output_tokens=v[6],
            measured_it_kwh=v[7],
        )
        for key, v in acc.items()
    }
