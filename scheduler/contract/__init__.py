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

__all__ = [
    "BASELINE_KEYS",
    "FORECAST_COLUMNS",
    "TOTAL_KEYS",
    "build_problem",
    "format_time",
    "parse_batches",
    "parse_time",
    "plan_from_json",
    "plan_to_json",
    "read_batches",
    "read_forecasts",
    "read_plan",
    "write_plan",
]
