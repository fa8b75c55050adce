"""The pricing rule is one dependency-free module: it imports only the domain, and loading it
(with the ledger maths and the realised savings that use it) loads no solver (issue 19)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scheduler.pricing

ROOT = Path(__file__).resolve().parents[2]


def test_pricing_imports_only_the_domain() -> None:
    # Given the module's syntax tree
    tree = ast.parse(Path(scheduler.pricing.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    # Then its only project import is the domain, and nothing outside the standard library
    project = {m for m in imported if m.startswith(("scheduler", "workers"))}
    assert project == {"scheduler.domain"}
    third_party = (
        {m.split(".")[0] for m in imported}
        - set(sys.stdlib_module_names)
        - {
            "__future__",
            "scheduler",
        }
    )
    assert third_party == set()


@pytest.mark.slow  # starts a fresh interpreter
def test_booking_and_realised_savings_load_no_solver() -> None:
    # When a fresh interpreter imports pricing, the ledger maths and the realised savings
    code = (
        "import sys, scheduler.pricing, workers.ledger, workers.energy.estimate, "
        "scheduler.review.realised; "
        "print(sorted(m for m in ('pulp', 'highspy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # Then PuLP, HiGHS and numpy stay unloaded
    assert out.stdout.strip() == "[]", out.stderr


def test_the_optimizer_module_re_exports_the_one_rule() -> None:
    from scheduler.optimizer import pricing as optimizer_pricing

    assert optimizer_pricing.price_piece is scheduler.pricing.price_piece
    assert optimizer_pricing.market_g_per_kwh is scheduler.pricing.market_g_per_kwh
