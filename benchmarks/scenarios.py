"""Planning scenarios in the contract's file format, assembled from the shared real traces.

Real parts (see ``shared/data/PROVENANCE.md``):

- 10 sites with hourly carbon intensity, electricity price and water intensity for the same
  hours, 2022-09-22 onwards (``glb_equitable_ai_2022/``, Li, Yang, Wierman, Ren 2023);
- on-site solar as the hourly mean of Solcast 5-minute PV actuals of a nearby city, shifted by
  whole hours for longitude (``renewables/solcast_vessim/``, June 2022: the shape is real, the
  dates differ from the carbon trace);
- model profiles from ML.ENERGY v3 (``llm_energy/mlenergy_v3/``, lm-arena-chat task): for each
  model and GPU the configuration with the highest output throughput gives ``decode_tok_s``, its
  GPUs per replica and ``power_w`` (mean power / GPUs).

Estimated parts, labelled: prefill throughput = decode x 10 (8B), 8 (32B), 6 (70B); PUE and
installed PV peak per site; embodied carbon per GPU-hour from EcoLogits' constants (5,700 kg per
8-GPU server + 164 kg per H100, 3 years; B200 x 1.5); the trace's water intensity is applied as
``wue_l_per_kwh`` per IT kWh with ``ewif_l_per_kwh = 0`` because the trace combines on- and
off-site water without saying how. Batches are synthetic (seeded), sized so that the fleet is
about half loaded over the horizon.

Usage: ``python benchmarks/scenarios.py --out DIR --batches 2000 [--hours 48] [--seed 0]``.
Never write scenarios into the repository: they are derived from the shared traces.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

TRACE_START = datetime(2022, 9, 22, tzinfo=UTC)
TRACE_HOURS = 457
# glb site name -> (site id, solcast city, whole-hour solar shift, PUE, PV kWp, H100, B200)
SITES: tuple[tuple[str, str, str, int, float, float, int, int], ...] = (
    ("Texas", "us-tx-dallas", "Mexico City", 0, 1.12, 40.0, 8, 0),
    ("Virginia", "us-va-ashburn", "Mexico City", -1, 1.15, 10.0, 16, 4),
    ("Georgia", "us-ga-atlanta", "Mexico City", -1, 1.18, 20.0, 8, 0),
    ("Nevada", "us-nv-reno", "San Francisco", 0, 1.10, 60.0, 8, 0),
    ("Germany", "de-frankfurt", "Berlin", 0, 1.15, 20.0, 8, 4),
    ("Belguim", "be-brussels", "Berlin", -1, 1.20, 10.0, 4, 0),
    ("Netherlands", "nl-amsterdam", "Berlin", -1, 1.15, 10.0, 8, 0),
    ("Denmark", "dk-copenhagen", "Stockholm", 0, 1.10, 20.0, 8, 0),
    ("Japan", "jp-tokyo", "Hong Kong", 2, 1.25, 10.0, 8, 4),
    ("Singapore", "sg-jurong", "Hong Kong", -1, 1.30, 10.0, 8, 0),
)
# (model id in ML.ENERGY, our name, quality, prefill/decode factor: an estimate)
MODELS = (
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct", 0.55, 10.0),
    ("Qwen/Qwen3-32B", "qwen3-32b", 0.74, 8.0),
    ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b-instruct", 0.80, 6.0),
)
_EMBODIED_H100_G_PER_GPU_HOUR = (5700.0 / 8 + 164.0) * 1000 / (3 * 8760)
_EMBODIED_B200_G_PER_GPU_HOUR = _EMBODIED_H100_G_PER_GPU_HOUR * 1.5


@dataclass(frozen=True)
class Scenario:
    """Paths of a written scenario and its size."""

    fleet: Path
    forecasts: Path
    batches: Path
    sites: int
    hours: int
    batch_count: int


def _series(path: Path, column: str, scale: float) -> list[float]:
    with path.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        key = next(k for k in (reader.fieldnames or []) if k.strip() == column)
        return [float(row[key]) * scale for row in reader][:TRACE_HOURS]


def _solar_by_city(shared: Path) -> dict[str, list[float]]:
    """Hourly mean PV output (0..1) per city; Solcast stamps are period ends (5-min)."""
    path = shared / "data" / "renewables" / "solcast_vessim" / "solcast2022_global_actual.csv"
    sums: dict[str, list[float]] = {}
    with path.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cities = [c for c in (reader.fieldnames or []) if c != "datetime"]
        for i, row in enumerate(reader):
            hour = i // 12  # rows 0..11 end within the first hour
            for c in cities:
                series = sums.setdefault(c, [])
                if len(series) <= hour:
                    series.append(0.0)
                series[hour] += float(row[c]) / 12
    return sums


def _solar_next_hour(shared: Path) -> dict[str, dict[int, float]]:
    """Solcast's own forecast of the coming hour per city: ``{hour: mean PV 0..1}``.

    ``forecasts/solcast_vessim``: an issue on each hour with 5-minute values 5 to 65 min ahead;
    the twelve ending within the hour make the slot's forecast (the hour index counts from the
    actuals' first hour, 2022-06-08T00:00Z).
    """
    path = shared / "data" / "forecasts" / "solcast_vessim"
    path = path / "solcast2022_global_forecast_hourly_issues.csv"
    first = datetime(2022, 6, 8, tzinfo=UTC)
    out: dict[str, dict[int, float]] = {}
    with path.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cities = [c for c in (reader.fieldnames or []) if c not in ("datetime", "period_end")]
        for row in reader:
            issued = datetime.fromisoformat(row["datetime"]).replace(tzinfo=UTC)
            ahead = datetime.fromisoformat(row["period_end"]).replace(tzinfo=UTC) - issued
            if ahead > timedelta(hours=1):
                continue
            hour = int((issued - first) / timedelta(hours=1))
            for c in cities:
                cell = out.setdefault(c, {})
                cell[hour] = cell.get(hour, 0.0) + float(row[c]) / 12
    return out


def solar_forecast(shared: Path, sites: int) -> Any:
    """``kw(site, issued_h, slot_h)``: the on-site solar forecast an issue at trace hour
    ``issued_h`` gives for trace hour ``slot_h`` (>= ``issued_h``), in kW.

    REAL where it exists: the slot of the issue's own hour takes Solcast's forecast for the
    coming hour (``_solar_next_hour``); later slots, beyond Solcast's 65-minute horizon, take
    persistence: the actual output at the slot's hour of day on the latest day whose hour had
    ended by the issue (``persistence_hour``: 24 h before the slot at leads under 24 h, 48 h
    before at 24-47 h, ...), the usual baseline that never peeks past the issue. The site's
    city, hour shift and peak kW are the actuals' (``SITES``).
    """
    actual = _solar_by_city(shared)
    ahead = _solar_next_hour(shared)
    where = {site_id: (city, shift, kwp) for _, site_id, city, shift, _, kwp, _, _ in SITES[:sites]}

    def kw(site: str, issued_h: int, slot_h: int) -> float:
        city, shift, kwp = where[site]
        pv = actual[city]
        i = (slot_h - shift) % len(pv)
        if slot_h == issued_h and i in ahead[city]:
            return round(kwp * ahead[city][i], 4)
        past = persistence_hour(issued_h, slot_h) - shift
        return round(kwp * pv[past % len(pv)], 4)

    return kw


def persistence_hour(issued_h: int, slot_h: int) -> int:
    """The trace hour whose actual a persistence forecast issued at ``issued_h`` gives for
    ``slot_h``: the same hour of day, whole days back, on the latest day whose hour had ended
    by the issue (its end, one hour later, at or before ``issued_h``). At leads of 24 h or more
    that is two or more days back, never the day 24 h earlier (part of it lies after the issue).
    """
    if slot_h < issued_h:
        raise ValueError(
            f"slot hour {slot_h} is before the issue hour {issued_h}: forecasts look ahead"
        )
    days = (slot_h - issued_h) // 24 + 1
    return slot_h - 24 * days


def _profiles(shared: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = shared / "data" / "llm_energy" / "mlenergy_v3" / "llm_configurations_flat.csv"
    best: dict[tuple[str, str], dict[str, str]] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["task"] != "lm-arena-chat":
                continue
            key = (row["model_id"], row["gpu_model"])
            tput = float(row["output_throughput_tokens_per_sec"])
            if key not in best or tput > float(best[key]["output_throughput_tokens_per_sec"]):
                best[key] = row
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model_id, name, _, factor in MODELS:
        for gpu in ("H100", "B200"):
            row = best.get((model_id, gpu))
            if row is None:
                continue
            gpus = int(row["num_gpus"])
            decode = float(row["output_throughput_tokens_per_sec"])
            out.setdefault(name, {})[gpu] = {
                "gpus": gpus,
                "prefill_tok_s": round(decode * factor, 1),
                "decode_tok_s": round(decode, 1),
                "power_w": round(float(row["avg_power_watts"]) / gpus, 1),
            }
    return out


def build_fleet(shared: Path, sites: int = 10) -> dict[str, Any]:
    """The scenario's ``fleet.yaml`` content (the first ``sites`` sites)."""
    profiles = _profiles(shared)
    fleet_sites = []
    for _, site_id, _, _, pue, _, h100, b200 in SITES[:sites]:
        pools: list[dict[str, Any]] = [
            {
                "name": "h100",
                "gpu": "H100",
                "count": h100,
                "embodied_g_per_gpu_hour": round(_EMBODIED_H100_G_PER_GPU_HOUR, 2),
            }
        ]
        if b200:
            pools.append(
                {
                    "name": "b200",
                    "gpu": "B200",
                    "count": b200,
                    "embodied_g_per_gpu_hour": round(_EMBODIED_B200_G_PER_GPU_HOUR, 2),
                }
            )
        fleet_sites.append(
            {
                "name": site_id,
                "pue": pue,
                "wue_l_per_kwh": 0.0,
                "ewif_l_per_kwh": 0.0,
                "pools": pools,
            }
        )
    return {
        "slot_minutes": 60,
        "sites": fleet_sites,
        "models": [
            {"name": name, "quality": quality, "profiles": profiles[name]}
            for _, name, quality, _ in MODELS
        ],
    }


def forecast_rows(shared: Path, sites: int, hours: int, start_hour: int) -> list[dict[str, Any]]:
    """Rows of ``forecasts.csv`` for the first ``sites`` sites over ``hours`` hours."""
    glb = shared / "data" / "glb_equitable_ai_2022"
    solar = _solar_by_city(shared)
    rows: list[dict[str, Any]] = []
    for name, site_id, city, shift, _, kwp, _, _ in SITES[:sites]:
        carbon = _series(glb / "carbon" / f"{name}_carbon.csv", "Carbon (kg/kWh)", 1000.0)
        price = _series(glb / "price" / f"{name}_Price.csv", "Price (USD/MWh)", 1e-3)
        water = _series(glb / "water" / f"{name}_water.csv", "WUE (L/kWh)", 1.0)
        pv = solar[city]
        for h in range(start_hour, start_hour + hours):
            rows.append(
                {
                    "time": (TRACE_START + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "site": site_id,
                    "carbon_g_per_kwh": round(carbon[h], 3),
                    "price_per_kwh": round(price[h], 6),
                    "renewable_kw": round(kwp * pv[(h - shift) % len(pv)], 4),
                    "wue_l_per_kwh": round(water[h], 4),
                }
            )
    return rows


def batch_lines(
    fleet: dict[str, Any], count: int, hours: int, start_hour: int, seed: int
) -> list[dict[str, Any]]:
    """Synthetic batches (seeded) loading the fleet to about half its GPU-hours."""
    rng = random.Random(seed)
    start = TRACE_START + timedelta(hours=start_hour)
    capacity_gpu_h = sum(p["count"] for s in fleet["sites"] for p in s["pools"]) * hours
    small = fleet["models"][0]["profiles"]["H100"]
    eu = [s["name"] for s in fleet["sites"] if s["name"].split("-")[0] in {"de", "be", "nl", "dk"}]
    us = [s["name"] for s in fleet["sites"] if s["name"].startswith("us-")]
    # Larger models need ~3-8x the GPU-hours of the small one; aim at ~45 % load in small units.
    per_batch_gpu_h = 0.45 * capacity_gpu_h / count / 3.0
    lines = []
    for i in range(count):
        in_per_req = rng.uniform(300, 3000)
        out_per_req = rng.uniform(80, 600)
        per_req_h = (
            in_per_req / small["prefill_tok_s"] + out_per_req / small["decode_tok_s"]
        ) / 3600
        requests = max(1, int(per_batch_gpu_h * rng.lognormvariate(0, 0.6) / per_req_h))
        submitted = start + timedelta(minutes=rng.uniform(0, 0.6 * hours * 60))
        window_h = rng.choice((6, 12, 24, 36))
        deadline = min(submitted + timedelta(hours=window_h), start + timedelta(hours=hours))
        if deadline - submitted < timedelta(hours=3):
            submitted = deadline - timedelta(hours=3)
        line: dict[str, Any] = {
            "id": f"job-{i:05d}",
            "requests": requests,
            "input_tokens": round(requests * in_per_req),
            "output_tokens": round(requests * out_per_req),
            "submitted_at": submitted.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "priority": rng.choice((0.5, 1.0, 1.0, 2.0)),
        }
        if rng.random() < 0.5:
            line["min_quality"] = rng.choice((0.5, 0.7, 0.8))
        else:
            line["model"] = rng.choice(fleet["models"])["name"]
        residency = rng.random()
        if residency < 0.15 and eu:
            line["sites"] = eu
        elif residency < 0.25 and us:
            line["sites"] = us
        lines.append(line)
    return lines


def write_scenario(
    shared: Path,
    out: Path,
    *,
    batches: int = 200,
    sites: int = 10,
    hours: int = 48,
    start_hour: int = 0,
    seed: int = 0,
) -> Scenario:
    """Write ``fleet.yaml``, ``forecasts.csv`` and ``batches.jsonl`` into ``out``.

    Raises:
        ValueError: a horizon beyond the trace (457 hours) or an out-of-range site count.
    """
    if not 1 <= sites <= len(SITES):
        raise ValueError(f"sites must be 1..{len(SITES)}, got {sites}")
    if start_hour < 0 or start_hour + hours > TRACE_HOURS - 1:
        raise ValueError(f"start_hour + hours must be within the {TRACE_HOURS - 1}-hour trace")
    out.mkdir(parents=True, exist_ok=True)
    fleet = build_fleet(shared, sites)
    fleet_path, forecasts_path, batches_path = (
        out / "fleet.yaml",
        out / "forecasts.csv",
        out / "batches.jsonl",
    )
    fleet_path.write_text(yaml.safe_dump(fleet, sort_keys=False), encoding="utf-8")
    rows = forecast_rows(shared, sites, hours, start_hour)
    with forecasts_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = batch_lines(fleet, batches, hours, start_hour, seed)
    batches_path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return Scenario(fleet_path, forecasts_path, batches_path, sites, hours, batches)


def main() -> None:
    """Command-line entry: write one scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--start-hour", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    args = parser.parse_args()
    s = write_scenario(
        args.shared,
        args.out,
        batches=args.batches,
        sites=args.sites,
        hours=args.hours,
        start_hour=args.start_hour,
        seed=args.seed,
    )
    print(f"wrote {s.fleet}, {s.forecasts}, {s.batches}")


if __name__ == "__main__":
    main()
