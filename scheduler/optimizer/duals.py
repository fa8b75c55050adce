"""The binding rows of the stage that decided placement, read from the LP's row duals.

Only the capacity (``capacity__SITE__POOL__tT``), water-cap (``water__SITE__dYYYYMMDD``) and
carbon-budget (``carbon_cap`` for the horizon, ``carbon_cap__dYYYYMMDD`` per UTC day, kept with
``start`` = that day) rows are kept, and only those with a non-zero dual: their shadow
price is what one more unit of the limit would save of the stage's objective (grams of CO2 per
GPU-hour, per litre, per gram of budget when the stage is carbon). Degenerate LPs (many equal
slots) have several dual solutions, so a row kept here is *a* binding limit, and a tight row
left out is not proven slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from scheduler.domain import BindingRow, Objective
from scheduler.optimizer.model import FloatArray, LinearModel, lp_name
from scheduler.optimizer.problem import PlanningProblem

#: Duals smaller than this (objective units per unit of the limit) are taken as zero.
DUAL_EPS = 1e-7

_UNITS = {
    "capacity": "GPU-hour",
    "water": "litre",
    "carbon_cap": "g CO2 of budget",
}


def dual_stage(objectives: Sequence[str]) -> int:
    """Index of the stage whose duals explain placement: carbon, else the first one."""
    names = list(objectives)
    return names.index(Objective.CARBON.value) if Objective.CARBON.value in names else 0


def _row_keys(
    problem: PlanningProblem,
) -> dict[str, tuple[str, str | None, str | None, datetime | None]]:
    keys: dict[str, tuple[str, str | None, str | None, datetime | None]] = {
        "carbon_cap": ("carbon_cap", None, None, None)
    }
    days = sorted({t.astimezone(UTC).date() for t in problem.slots})
    for day in days:
        keys[lp_name("carbon_cap", f"d{day:%Y%m%d}")] = (
            "carbon_cap",
            None,
            None,
            datetime(day.year, day.month, day.day, tzinfo=UTC),
        )
    for site in problem.fleet.sites:
        for pool in site.pools:
            for t, slot in enumerate(problem.slots):
                keys[lp_name("capacity", site.name, pool.name, f"t{t}")] = (
                    "capacity",
                    site.name,
                    pool.name,
                    slot,
                )
        for day in days:
            keys[lp_name("water", site.name, f"d{day:%Y%m%d}")] = (
                "water",
                site.name,
                None,
                datetime(day.year, day.month, day.day, tzinfo=UTC),
            )
    return keys


def binding_rows(
    problem: PlanningProblem, model: LinearModel, row_duals: FloatArray, objective: str
) -> tuple[BindingRow, ...]:
    """The capacity, water and budget rows with a non-zero dual, as ``BindingRow`` records.

    ``row_duals`` is in ``model.row_names`` order (extra rows after them, e.g. ``lex`` rows,
    are ignored). Solvers report the dual of a binding ``<=`` row of a minimisation as
    negative; the shadow price kept is its opposite (what one more unit would save).
    """
    keys = _row_keys(problem)
    unit = "g CO2" if objective == Objective.CARBON.value else f"{objective} units"
    out: list[BindingRow] = []
    for name, y in zip(model.row_names, row_duals[: len(model.row_names)], strict=True):
        key = keys.get(name)
        if key is None or abs(float(y)) <= DUAL_EPS:
            continue
        kind, site, pool, start = key
        out.append(
            BindingRow(
                kind=kind,
                objective=objective,
                shadow_price=-float(y),
                unit=f"{unit} per {_UNITS[kind]}",
                site=site,
                pool=pool,
                start=start,
            )
        )
    return tuple(out)


def rows_json(rows: Sequence[BindingRow]) -> list[dict[str, object]]:
    """``BindingRow`` records as JSON objects (``start`` as ISO-8601 UTC), for the plans table."""
    return [
        {
            "kind": r.kind,
            "objective": r.objective,
            "shadow_price": r.shadow_price,
            "unit": r.unit,
            "site": r.site,
            "pool": r.pool,
            "start": r.start.astimezone(UTC).isoformat() if r.start is not None else None,
        }
        for r in rows
    ]
