"""The planning LP's primitives: row and column names, and the signals as dense arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

from scheduler.errors import PlanningError
from scheduler.optimizer.problem import PlanningProblem

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_NAME_RE = re.compile(r"[^a-z0-9_]+")


def lp_name(*parts: object) -> str:
    """Join parts with ``__`` and keep only ``[a-z0-9_]`` (PuLP rewrites other characters)."""
    return "__".join(_NAME_RE.sub("_", str(p).lower()) for p in parts)


@dataclass(frozen=True, slots=True)
class Signals:
    """Signals as dense ``[site, slot]`` arrays, plus the fixed load already committed."""

    carbon: FloatArray
    price: FloatArray
    renewable_kwh: FloatArray
    wue: FloatArray
    fixed_gpu_h: FloatArray  # [pool_flat, slot]
    fixed_fac_kwh: FloatArray  # [site, slot]
    capacity_gpu_h: FloatArray  # [pool_flat, slot], before fixed load
    days: tuple[date, ...]  # UTC day of each slot start
    cap_carbon: FloatArray  # [site, slot] grid factor of the carbon cap rows (7)


def dense_signals(problem: PlanningProblem, pools: list[tuple[int, int]]) -> Signals:
    """Signals and fixed loads as arrays.

    Raises:
        PlanningError: a (site, slot) of the horizon has no signal.
    """
    fleet = problem.fleet
    n_s, n_t = len(fleet.sites), len(problem.slots)
    shape = (n_s, n_t)
    carbon, price, ren, wue, cap_carbon = (np.zeros(shape) for _ in range(5))
    sh = fleet.slot_hours
    for s, site in enumerate(fleet.sites):
        for t, slot in enumerate(problem.slots):
            sig = problem.signals.get((site.name, slot))
            if sig is None:
                raise PlanningError(
                    f"no forecast for site {site.name} at {slot.isoformat()}; every site needs "
                    "a signal for every slot of the horizon"
                )
            carbon[s, t] = sig.carbon_g_per_kwh
            cap_carbon[s, t] = problem.cap_carbon_g_per_kwh.get(
                (site.name, slot), sig.carbon_g_per_kwh
            )
            price[s, t] = sig.price_per_kwh
            ren[s, t] = max(0.0, sig.renewable_kw) * sh
            wue[s, t] = site.wue_l_per_kwh if sig.wue_l_per_kwh is None else sig.wue_l_per_kwh
    slot_index = {slot: t for t, slot in enumerate(problem.slots)}
    site_index = {s.name: i for i, s in enumerate(fleet.sites)}
    pool_index = {
        (fleet.sites[s].name, fleet.sites[s].pools[p].name): i for i, (s, p) in enumerate(pools)
    }
    fixed_gpu = np.zeros((len(pools), n_t))
    fixed_fac = np.zeros(shape)
    for f in problem.fixed:
        ft = slot_index.get(f.slot)
        if ft is None or f.site not in site_index:
            continue
        t = ft
        fixed_fac[site_index[f.site], t] += f.facility_kwh
        if (f.site, f.pool) in pool_index:
            fixed_gpu[pool_index[(f.site, f.pool)], t] += f.gpu_hours
    avail = np.array([problem.slot_available.get(slot, 1.0) for slot in problem.slots])
    counts = np.array([fleet.sites[s].pools[p].count for s, p in pools], dtype=float)
    capacity = counts[:, None] * sh * avail[None, :]
    days = tuple(_utc_day(slot) for slot in problem.slots)
    return Signals(carbon, price, ren, wue, fixed_gpu, fixed_fac, capacity, days, cap_carbon)


def _utc_day(t: datetime) -> date:
    return t.astimezone(UTC).date() if t.tzinfo is not None else t.date()
