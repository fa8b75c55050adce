"""An auditor's checks over a live service's answers (``scripts/audit.py`` fetches them).

Pure: each check reads the JSON the API returned (the emissions report in JSON and ESRS form,
each batch's review, the budget) and says what it found. The checks are issue 19's "Done when":
one market-based answer in every view, every synthetic or fallback row labelled and counted,
lifecycle figures apart from scope 2, no silent zero cost, no savings credited to failed
requests, no savings where nothing moved, and a breached budget reported.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MARKET_TOLERANCE = 1e-3  # "one market-based answer in every view (within 0.1 %)"
NOTHING_MOVED_TOLERANCE = 0.01  # "no savings where nothing moved (within 1 %)"
FALLBACK_SOURCES = frozenset({"persistence", "site-factor", "zone-average"})

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome: its name, whether it passed, and what it saw."""

    check: str
    ok: bool
    detail: str


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _market(row: Json) -> float:
    market = row.get("co2_market_g")
    return float(market) if market is not None else float(row["co2_location_g"])


def one_market_answer(report: Json, reviews: Mapping[str, Json]) -> Finding:
    """Each batch's review gives the market-based figure the report's rows add up to."""
    per_batch: dict[str, float] = defaultdict(float)
    for row in report["rows"]:
        per_batch[row["batch_id"]] += _market(row)
    bad = [
        f"{bid}: review {review.get('co2_market_g')} vs report {per_batch[bid]}"
        for bid, review in reviews.items()
        if bid in per_batch
        and (
            review.get("co2_market_g") is None
            or not _close(float(review["co2_market_g"]), per_batch[bid], MARKET_TOLERANCE)
        )
    ]
    total = math.fsum(per_batch.values())
    reported = float(report["totals"]["scope2_market_g"])
    if not _close(total, reported, MARKET_TOLERANCE):
        bad.append(f"report total {reported} vs its rows {total}")
    return Finding("one market-based answer", not bad, "; ".join(bad) or f"{len(reviews)} batches")


def fallbacks_labelled(report: Json) -> Finding:
    """Every synthetic or fallback row says so, and the report counts them."""
    rows = report["rows"]
    bad = [
        f"row {r['id']} booked from {r['carbon_source']} without signal_fallback"
        for r in rows
        if r["carbon_source"] in FALLBACK_SOURCES and not r.get("signal_fallback")
    ]
    totals = report["totals"]
    fallback = sum(1 for r in rows if r.get("signal_fallback"))
    synthetic = sum(1 for r in rows if r.get("signal_synthetic"))
    if totals["signal_fallback_rows"] != fallback:
        bad.append(f"signal_fallback_rows {totals['signal_fallback_rows']} vs {fallback} rows")
    if totals["synthetic_rows"] != synthetic:
        bad.append(f"synthetic_rows {totals['synthetic_rows']} vs {synthetic} rows")
    return Finding(
        "synthetic and fallback rows labelled and counted",
        not bad,
        "; ".join(bad) or f"{fallback} fallback, {synthetic} synthetic rows",
    )


def lifecycle_apart(report: Json, esrs: Json) -> Finding:
    """Scope 2 sums average direct figures only; lifecycle rows are counted apart."""
    rows = report["rows"]
    life = [r for r in rows if r.get("carbon_factor") == "average-lifecycle"]
    bad = [
        f"lifecycle row {r['id']} has no co2_lifecycle_g"
        for r in life
        if r.get("co2_lifecycle_g") is None
    ]
    location = math.fsum(float(r["co2_location_g"]) for r in rows)
    if not _close(location, float(report["totals"]["scope2_location_g"]), 1e-9):
        bad.append("scope 2 location-based is not the sum of the rows' average direct figures")
    if esrs["E1-6"].get("lifecycle_rows") != len(life):
        bad.append(f"ESRS lifecycle_rows {esrs['E1-6'].get('lifecycle_rows')} vs {len(life)}")
    return Finding("lifecycle apart from scope 2", not bad, "; ".join(bad) or f"{len(life)} rows")


def no_silent_zero_cost(report: Json) -> Finding:
    """A row with grid energy and no cost says why (``price_fallback``)."""
    bad = [
        f"row {r['id']}"
        for r in report["rows"]
        if float(r["grid_kwh"]) > 0 and float(r["cost"]) == 0.0 and not r.get("price_fallback")
    ]
    return Finding("no silent zero cost", not bad, ", ".join(bad) or "every zero cost labelled")


def _slot(t: str) -> str:
    return datetime.fromisoformat(t).strftime("%Y-%m-%dT%H")


def savings_honest(report: Json, reviews: Mapping[str, Json]) -> Finding:
    """No saving credited to a batch whose every request failed, none where nothing moved."""
    rows: dict[str, list[Json]] = defaultdict(list)
    for r in report["rows"]:
        rows[r["batch_id"]].append(r)
    bad = []
    for bid, review in reviews.items():
        mine = rows.get(bid)
        if not mine:
            continue
        actual = float(review["actual"]["co2_g"])
        saved = float(review["asap_counterfactual"]["co2_g"]) - actual
        if sum(int(r["requests_done"]) for r in mine) == 0 and saved != 0.0:
            bad.append(f"{bid}: every request failed, {saved} g credited")
        at_once = all(_slot(r["started_at"]) == _slot(review["submitted_at"]) for r in mine)
        if at_once and abs(saved) > NOTHING_MOVED_TOLERANCE * max(actual, 1e-12):
            bad.append(f"{bid}: ran in its submission slot, {saved} g claimed")
    return Finding("savings only where work moved and succeeded", not bad, "; ".join(bad) or "ok")


def budget_breach_reported(report: Json, budget: Json) -> Finding:
    """A breached budget is an event the budget view and the report both carry."""
    breached = budget.get("breached") or []
    listed = report.get("budget_breaches")
    if breached and not listed:
        return Finding("budget breach reported", False, f"{breached} breached, report lists none")
    return Finding("budget breach reported", True, f"breached: {breached or 'none'}")


def run_checks(
    report: Json, esrs: Json, reviews: Mapping[str, Json], budget: Json
) -> Sequence[Finding]:
    """Every check, in the issue's order."""
    return (
        savings_honest(report, reviews),
        fallbacks_labelled(report),
        one_market_answer(report, reviews),
        lifecycle_apart(report, esrs),
        budget_breach_reported(report, budget),
        no_silent_zero_cost(report),
    )
