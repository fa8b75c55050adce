"""Planning files of the contract (planning-formats.md): forecasts, batches, problem, plan.json."""

from scheduler.contract.inputs import (
    FORECAST_COLUMNS,
    build_problem,
    format_time,
    parse_batches,
    parse_time,
    read_batches,
    read_forecasts,
)
from scheduler.contract.plan_file import (
    BASELINE_KEYS,
    TOTAL_KEYS,
    plan_from_json,
    plan_to_json,
    read_plan,
    write_plan,
)
from scheduler.contract.vintages import (
    VINTAGE_COLUMNS,
    Vintages,
    ceil_to_slot,
    read_vintages,
    write_vintages,
)

__all__ = [
    "BASELINE_KEYS",
    "FORECAST_COLUMNS",
    "TOTAL_KEYS",
    "VINTAGE_COLUMNS",
    "Vintages",
    "build_problem",
    "ceil_to_slot",
    "format_time",
    "parse_batches",
    "parse_time",
    "plan_from_json",
    "plan_to_json",
    "read_batches",
    "read_forecasts",
    "read_plan",
    "read_vintages",
    "write_plan",
    "write_vintages",
]
