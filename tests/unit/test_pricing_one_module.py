"""One pricing module: energy, carbon, water and cost arithmetic lives in scheduler/pricing.py.

The test walks every module of ``scheduler/`` and ``workers/`` and fails on a multiplication or
division one of whose operands is a pricing factor: a name, attribute or subscript of one of
``FACTORS`` (PUE, carbon intensity, price, WUE, EWIF, power, token throughput, embodied CO2 per
GPU-hour, market and residual factors, renewable power). Such arithmetic belongs in
``scheduler.pricing`` (scalar functions the planner, the LP builder, the ledger and the review
call), so a kWh is priced one way everywhere.

Allowed elsewhere, each for a reason that is not pricing work:

- ``scheduler/forecasts/synthetic.py``: makes a synthetic forecast's WUE curve (a signal, not
  a price of work).
- ``workers/demo_night.py``: makes the demo night's forecast error and reports it (signals).
- ``scheduler/optimizer/calibration.py``: fits a profile's power and throughput to measured runs
  (profile parameters, not a price of work).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTORS = frozenset(
    {
        "pue",
        "carbon_g_per_kwh",
        "price_per_kwh",
        "wue_l_per_kwh",
        "ewif_l_per_kwh",
        "power_w",
        "prefill_tok_s",
        "decode_tok_s",
        "embodied_g_per_gpu_hour",
        "market_factor_g_per_kwh",
        "residual_mix_g_per_kwh",
        "renewable_kw",
    }
)
PRICING = "scheduler/pricing.py"
ALLOWED = {
    "scheduler/forecasts/synthetic.py": "makes synthetic signals",
    "workers/demo_night.py": "makes and reports the demo's forecast error",
    "scheduler/optimizer/calibration.py": "fits profile parameters to measurements",
}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name(node.value)
    return None


def pricing_arithmetic(source: str) -> list[str]:
    """``line: expression`` for each product or quotient with a pricing factor as an operand."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div))):
            continue
        if _name(node.left) in FACTORS or _name(node.right) in FACTORS:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_pricing_arithmetic() -> None:
    # Given code that prices energy by hand (attribute, name and subscript operands)
    source = "a = it_kwh * site.pue\nb = grid / price_per_kwh\nc = kwh * sig.carbon_g_per_kwh[0]\n"
    # Then every one is found, and plain arithmetic is not
    assert len(pricing_arithmetic(source)) == 3
    assert pricing_arithmetic("d = n * per_request\ne = site.pue + 1\n") == []


def test_energy_carbon_water_and_cost_arithmetic_only_in_the_pricing_module() -> None:
    # Given every module of scheduler/ and workers/ except the pricing module and the allow-list
    offenders = []
    for package in ("scheduler", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == PRICING or rel in ALLOWED:
                continue
            offenders += [f"{rel}:{hit}" for hit in pricing_arithmetic(path.read_text())]
    # Then none multiplies or divides by a pricing factor
    assert offenders == [], "price it with scheduler.pricing:\n" + "\n".join(offenders)
    # And the pricing module itself does (the check looks where the arithmetic is)
    assert pricing_arithmetic((ROOT / PRICING).read_text())
    # And every allow-listed module still needs its place on the list
    for rel in ALLOWED:
        assert pricing_arithmetic((ROOT / rel).read_text()), f"{rel} no longer needs allowing"
