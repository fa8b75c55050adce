"""Real carbon forecast error for the backtest benchmark, resampled from NESO's issues.

The shared ``forecasts/gb_neso_carbon_intensity_2023-03`` data holds five real 48 h GB national
issues (``fw48h``, 14-18 March 2023) and the measured intensities (``pt24h``). Each issue gives
a relative error trajectory by lead time, ``log(forecast / actual)`` at leads 0-47 h (hourly
slots, ``scheduler.forecasts.uk_archive``). The benchmark's vintages apply those real
trajectories to its own actuals: an issue at trace hour ``i`` for site number ``n`` takes the
real issue ``(n + i // 24) % 5`` (each site a different real issue, a new one each day) and
its error at the slot's lead time. A lead a real issue has no actual for takes the same lead
from the next real issue that has one (47 h, which none has, takes 46 h). This is a resampling of real error, not a forecast.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from scheduler.forecasts import uk_archive

NESO = Path("data") / "forecasts" / "gb_neso_carbon_intensity_2023-03"


def error_trajectories(shared: Path) -> list[dict[int, float]]:
    """Per real issue (by issue time), lead hour -> ``log(forecast / actual)``, where measured."""
    base = shared / NESO
    actual = {s.time: s.carbon_g_per_kwh for s in uk_archive.actuals(base / "pt24h", "gb", 60)}
    by_issue: dict[object, dict[int, float]] = {}
    for issued, s in uk_archive.vintages(base / "fw48h", "gb", 60):
        real = actual.get(s.time)
        lead = int((s.time - issued) / timedelta(hours=1))
        if real and real > 0 and s.carbon_g_per_kwh > 0 and lead < 48:
            by_issue.setdefault(issued, {})[lead] = math.log(s.carbon_g_per_kwh / real)
    return [by_issue[k] for k in sorted(by_issue, key=str)]


def error_at(trajectories: list[dict[int, float]], site_n: int, issue_h: int, lead_h: int) -> float:
    """The real log error site number ``site_n``'s issue at trace hour ``issue_h`` has at
    ``lead_h`` (0-47): real issue ``(site_n + issue_h // 24) % k`` or the next with that lead."""
    k = len(trajectories)
    if not k:
        raise ValueError(f"no NESO issues with actuals under shared/{NESO}: check the shared data")
    first = (site_n + issue_h // 24) % k
    for lead in range(lead_h, -1, -1):  # the real issues end at 46 h: 47 h takes 46 h's
        for step in range(k):
            traj = trajectories[(first + step) % k]
            if lead in traj:
                return traj[lead]
    raise ValueError(f"no NESO issue has an actual at lead {lead_h} h or less")
