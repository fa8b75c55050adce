"""Audit a live gridshift service as a sustainability auditor would (issue 19).

Usage::

    python scripts/audit.py --url http://127.0.0.1:8000 --key "$GRIDSHIFT_ADMIN_KEY" \
        [--from 2026-12-01T00:00:00Z] [--to 2026-12-08T00:00:00Z]

Reads the emissions report (JSON and ESRS), every reported batch's review and the budget over
HTTP with an admin key, runs ``scheduler.review.audit.run_checks`` and prints one line per
check (and a JSON summary with ``--json``). Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

import httpx

from scheduler.review.audit import Finding, run_checks


def fetch(client: httpx.Client, params: dict[str, str]) -> dict[str, Any]:
    """The service's answers the checks read."""

    def get(path: str, **extra: str) -> Any:
        r = client.get(path, params={**params, **extra})
        r.raise_for_status()
        return r.json()

    report = get("/v1/reports/emissions", format="json")
    esrs = get("/v1/reports/emissions", format="esrs")
    batch_ids = sorted({row["batch_id"] for row in report["rows"]})
    reviews = {bid: get(f"/v1/batches/{bid}/review") for bid in batch_ids}
    return {"report": report, "esrs": esrs, "reviews": reviews, "budget": get("/v1/budget")}


def audit(client: httpx.Client, params: dict[str, str]) -> list[Finding]:
    """Fetch and check."""
    got = fetch(client, params)
    return list(run_checks(got["report"], got["esrs"], got["reviews"], got["budget"]))


def main(argv: list[str] | None = None) -> int:
    """Command line: print the findings; 0 when all pass."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the API's base URL")
    p.add_argument("--key", required=True, help="an admin API key")
    p.add_argument("--from", dest="start", help="period start, ISO-8601 (default: a week back)")
    p.add_argument("--to", dest="end", help="period end, ISO-8601 (exclusive)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = p.parse_args(argv)
    params = {k: v for k, v in (("from", args.start), ("to", args.end)) if v}
    headers = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60.0) as client:
        findings = audit(client, params)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{'PASS' if f.ok else 'FAIL'}  {f.check}: {f.detail}")
    return 0 if all(f.ok for f in findings) else 1


if __name__ == "__main__":
    sys.exit(main())
