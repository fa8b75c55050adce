"""Builders of small, hand-checkable planning problems for the optimizer tests.

Units chosen so that arithmetic is easy: model ``small`` turns 3,600 tokens into one GPU-hour
at 1,000 W (1 kWh); ``big`` (quality 0.9) needs two GPU-hours for the same tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.contract import build_problem, read_batches, read_forecasts
from scheduler.domain import Fleet, Objective, PlanningBatch, SlotSignal
from scheduler.fleet import load_fleet, parse_fleet
from scheduler.optimizer.problem import PlanningProblem

T0 = datetime(2026, 11, 22, tzinfo=UTC)
#: Real GB carbon forecasts at five issue times, with actuals (``GRIDSHIFT_SHARED_DIR`` or
#: ``../shared``, as the ``shared_dir`` fixture).
NESO = (
    Path(os.environ.get("GRIDSHIFT_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    / "data/forecasts/gb_neso_carbon_intensity_2023-03"
)
HOUR = timedelta(hours=1)
GPU_HOUR_TOKENS = 3600.0  # tokens of one GPU-hour of model "small"

SMALL = {
    "name": "small",
    "quality": 0.5,
    "profiles": {"H100": {"gpus": 1, "prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 1000}},
}
BIG = {
    "name": "big",
    "quality": 0.9,
    "profiles": {"H100": {"gpus": 1, "prefill_tok_s": 0.5, "decode_tok_s": 0.5, "power_w": 1000}},
}


def site(name: str, *, gpus: int = 1, gpu: str = "H100", **extra: Any) -> dict[str, Any]:
    """A site with one pool ``p`` of ``gpus`` GPUs; PUE 1 and no water unless given."""
    return {
        "name": name,
        "pue": 1.0,
        "wue_l_per_kwh": 0.0,
        "ewif_l_per_kwh": 0.0,
        "pools": [{"name": "p", "gpu": gpu, "count": gpus}],
        **extra,
    }


def fleet(sites: Sequence[dict[str, Any]], models: Sequence[dict[str, Any]] = (SMALL,)) -> Fleet:
    """A ``Fleet`` with hourly slots."""
    return parse_fleet({"slot_minutes": 60, "sites": list(sites), "models": list(models)})


def batch(
    batch_id: str,
    *,
    gpu_hours: float = 1.0,
    requests: int = 10,
    start_h: float = 0.0,
    deadline_h: float = 24.0,
    model: str | None = "small",
    min_quality: float | None = None,
    sites: Sequence[str] | None = None,
    priority: float = 1.0,
) -> PlanningBatch:
    """A batch of ``gpu_hours`` of model ``small`` (input tokens only), in hours from T0."""
    return PlanningBatch(
        id=batch_id,
        requests=requests,
        input_tokens=gpu_hours * GPU_HOUR_TOKENS,
        output_tokens=0.0,
        submitted_at=T0 + timedelta(hours=start_h),
        deadline=T0 + timedelta(hours=deadline_h),
        model=None if min_quality is not None else model,
        min_quality=min_quality,
        sites=tuple(sites) if sites is not None else None,
        priority=priority,
    )


def problem(
    the_fleet: Fleet,
    carbon: Mapping[str, Sequence[float]],
    batches: Sequence[PlanningBatch],
    *,
    objectives: Sequence[str] = ("carbon", "cost", "delay"),
    price: Mapping[str, Sequence[float]] | None = None,
    renewable_kw: Mapping[str, Sequence[float]] | None = None,
    **kwargs: Any,
) -> PlanningProblem:
    """A problem whose horizon is ``len(carbon[site])`` hourly slots from T0."""
    n = len(next(iter(carbon.values())))
    slots = tuple(T0 + i * HOUR for i in range(n))
    signals = {
        (s, t): SlotSignal(
            time=t,
            site=s,
            carbon_g_per_kwh=carbon[s][i],
            price_per_kwh=(price or {}).get(s, [0.1] * n)[i],
            renewable_kw=(renewable_kw or {}).get(s, [0.0] * n)[i],
        )
        for s in carbon
        for i, t in enumerate(slots)
    }
    return PlanningProblem(
        fleet=the_fleet,
        slots=slots,
        signals=signals,
        batches=tuple(batches),
        objectives=tuple(Objective(o) for o in objectives),
        tolerances=(0.0,) * len(objectives),
        **kwargs,
    )


def example_problem(directory: Path, order: Sequence[str] | None = None) -> PlanningProblem:
    """A problem read from a contract example directory.

    With ``order``, those objectives with zero tolerances; without, the fleet's defaults.
    """
    the_fleet = load_fleet(directory / "fleet.yaml")
    slots, signals = read_forecasts(directory / "forecasts.csv", the_fleet)
    if order is None:
        return build_problem(the_fleet, slots, signals, read_batches(directory / "batches.jsonl"))
    return build_problem(
        the_fleet,
        slots,
        signals,
        read_batches(directory / "batches.jsonl"),
        [Objective(o) for o in order],
        [0.0] * len(order),
    )
