"""The planning contract's output file, ``plan.json`` (planning-formats.md section 5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scheduler.contract.inputs import format_time, parse_time
from scheduler.domain import (
    Assignment,
    BaselineTotals,
    Objective,
    Plan,
    PlanStatus,
    PlanTotals,
    Unplaced,
)
from scheduler.errors import InvalidInput

TOTAL_KEYS = (
    "co2_g",
    "operational_co2_g",
    "embodied_co2_g",
    "cost",
    "water_l",
    "energy_kwh",
    "grid_kwh",
    "delay_h",
)
BASELINE_KEYS = ("co2_g", "cost", "water_l", "delay_h", "unplaced", "caps_broken")

# --------------------------------------------------------------------------- plan.json


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """Render a plan as the contract's ``plan.json`` object (section 5)."""
    out: dict[str, Any] = {
        "status": plan.status.value,
        "objectives": [o.value for o in plan.objectives],
        "tolerances": list(plan.tolerances),
        "totals": {k: getattr(plan.totals, k) for k in TOTAL_KEYS},
        "assignments": [
            {
                "batch": a.batch,
                "site": a.site,
                "pool": a.pool,
                "model": a.model,
                "slot": format_time(a.slot),
                "requests": int(a.requests),
                "input_tokens": a.input_tokens,
                "output_tokens": a.output_tokens,
                "gpu_hours": a.gpu_hours,
                "energy_kwh": a.energy_kwh,
            }
            for a in plan.assignments
        ],
        "unplaced": [{"batch": u.batch, "reason": u.reason} for u in plan.unplaced],
        "baselines": {
            name: {k: getattr(b, k) for k in BASELINE_KEYS} for name, b in plan.baselines.items()
        },
        "solve_s": plan.solve_s,
    }
    if plan.stage_optima:
        out["stage_optima"] = dict(plan.stage_optima)
    if plan.notes:
        out["notes"] = list(plan.notes)
    if plan.fallback_signals:
        out["fallback_signals"] = True
    return out


def write_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan.json`` to ``path`` (UTF-8, indented, written to a temp file then renamed)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(plan_to_json(plan), indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)


def read_plan(path: str | Path) -> Plan:
    """Read a ``plan.json`` written by any planner that keeps the contract.

    Raises:
        InvalidInput: unreadable file, not JSON, or a missing/mistyped field.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInput(f"cannot read plan file {p}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{p} is not JSON: {e.msg} at line {e.lineno}") from e
    try:
        return plan_from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"{p} is not a plan.json of the contract: {e}") from e


def plan_from_json(raw: Mapping[str, Any]) -> Plan:
    """Build a ``Plan`` from a parsed ``plan.json`` object.

    Raises:
        KeyError, TypeError, ValueError: a required field is missing or mistyped.
    """
    totals = raw.get("totals") or {}
    return Plan(
        status=PlanStatus(raw["status"]),
        objectives=tuple(Objective(o) for o in raw["objectives"]),
        tolerances=tuple(float(t) for t in raw.get("tolerances", ())),
        totals=PlanTotals(**{k: float(totals.get(k, 0.0)) for k in TOTAL_KEYS}),
        assignments=tuple(
            Assignment(
                batch=str(a["batch"]),
                site=str(a["site"]),
                pool=str(a["pool"]),
                model=str(a["model"]),
                slot=parse_time(a["slot"], "slot"),
                requests=int(a["requests"]),
                input_tokens=float(a["input_tokens"]),
                output_tokens=float(a["output_tokens"]),
                gpu_hours=float(a.get("gpu_hours", 0.0)),
                energy_kwh=float(a.get("energy_kwh", 0.0)),
            )
            for a in raw.get("assignments", [])
        ),
        unplaced=tuple(
            Unplaced(batch=str(u["batch"]), reason=str(u.get("reason", "")))
            for u in raw.get("unplaced", [])
        ),
        baselines={
            name: BaselineTotals(
                co2_g=float(b["co2_g"]),
                cost=float(b["cost"]),
                water_l=float(b["water_l"]),
                delay_h=float(b["delay_h"]),
                unplaced=int(b["unplaced"]),
                caps_broken=int(b.get("caps_broken", 0)),
            )
            for name, b in (raw.get("baselines") or {}).items()
        },
        solve_s=float(raw.get("solve_s", 0.0)),
        stage_optima={str(k): float(v) for k, v in (raw.get("stage_optima") or {}).items()},
        notes=tuple(str(n) for n in raw.get("notes", ())),
        fallback_signals=bool(raw.get("fallback_signals", False)),
    )
