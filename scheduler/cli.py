"""The ``gridshift`` command: a thin Typer root that mounts the command modules.

Each module in ``COMMAND_MODULES`` exposes ``register(app: typer.Typer) -> None``. The worker
commands live in ``workers`` and are loaded by name, so ``scheduler`` never imports ``workers``
statically (the API must not load engines or NVML).
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "scheduler.commands.service",
    "scheduler.commands.planning",
    "scheduler.commands.backtest",
    "scheduler.commands.intake",
    "scheduler.commands.keys",
    "scheduler.commands.batches",
    "scheduler.commands.forecasts",
    "scheduler.commands.review",
    "scheduler.commands.ops",
    "scheduler.commands.profiles",
    "scheduler.commands.webhooks",
    "workers.commands",
)

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (batch failed, plan infeasible)
EXIT_USAGE = 2  # bad arguments or input (Typer/Click convention)
EXIT_UNREACHABLE = 3  # the API could not be reached
EXIT_NOT_FOUND = 4  # the object does not exist (or is not yours)
EXIT_TIMEOUT = 5  # --wait gave up before the batch finished


def build_app() -> typer.Typer:
    """Assemble the ``gridshift`` Typer app from the command modules."""
    app = typer.Typer(
        name="gridshift",
        help="Carbon-aware batch inference: submit, plan, run, report.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()
