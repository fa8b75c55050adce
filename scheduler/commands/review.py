"""``gridshift schedule`` and ``gridshift report``: the review, read straight from the store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from scheduler.commands.common import exit_on_error, print_json
from scheduler.config import get_settings
from scheduler.errors import ConfigError, InvalidInput, NotFound
from scheduler.review.reports import ReportFormat, ledger_entries, render_report
from scheduler.review.schedule import batch_labels, current_plan
from scheduler.review.units import money, plural, si
from scheduler.review.views import AssignmentView, CurrentPlan
from scheduler.store.db import existing_store_engine, session_factory
from scheduler.store.tables import now_utc
from scheduler.store.tenants import get_tenant

TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant's work (tenant name).")
]


def parse_time(text: str | None, what: str) -> datetime | None:
    """Parse an ISO-8601 time or date (UTC when it has no zone).

    Raises:
        InvalidInput: the text is not ISO-8601.
    """
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO-8601 time; use e.g. 2026-11-22 or 2026-11-22T06:00Z"
        ) from e
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@contextmanager
def store_session() -> Iterator[Session]:
    """A read session on the settings' store (no server needed); never creates a database.

    Raises:
        ConfigError: there is no store there, or it has no gridshift schema (exit 2; the
            message says how to make one).
    """
    settings = get_settings()
    engine = existing_store_engine(settings)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if not inspect(engine).has_table("batches"):
            raise ConfigError(
                f"the database at {where} has no gridshift schema; run `gridshift db upgrade` "
                "(or `gridshift demo` for a sample night), or set GRIDSHIFT_DATABASE_URL"
            )
        with session_factory(engine)() as session:
            yield session
    except (OperationalError, ProgrammingError) as e:
        raise ConfigError(
            f"cannot read the store at {where} ({type(e.orig).__name__}); run "
            "`gridshift db upgrade` or set GRIDSHIFT_DATABASE_URL"
        ) from e
    finally:
        engine.dispose()


def tenant_id_of(session: Session, name: str | None) -> str | None:
    """The id of tenant ``name`` (``None`` when no name is given).

    Raises:
        NotFound: no tenant has that name.
    """
    if name is None:
        return None
    tenant = get_tenant(session, name)
    if tenant is None:
        raise NotFound(f"no tenant called {name!r}; create one with `gridshift keys create`")
    return tenant.id


def schedule_tables(plan: CurrentPlan, labels: Mapping[str, str] | None = None) -> list[Table]:
    """One table per site/pool: slot, batches and models, energy, CO2 and the slot's signals.

    Figures carry SI prefixes and units (``23 mWh``) so that the table fits 80 columns; price
    is per kWh in the fleet's currency, solar the site's on-site output; batches are shown by
    ``labels`` (job names) where given.
    """
    labels = labels or {}
    lanes: dict[tuple[str, str], dict[datetime, list[AssignmentView]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for a in plan.assignments:
        lanes[(a.site, a.pool)][a.slot_start].append(a)
    tables = []
    for (site, pool), slots in sorted(lanes.items()):
        t = Table(
            title=f"{site}/{pool}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1, 0, 0),
        )
        t.add_column("slot UTC", no_wrap=True)
        t.add_column("batches (requests) on model", overflow="fold", min_width=16, ratio=1)
        for col in ("energy", "CO2", "g/kWh", "price", "solar"):
            t.add_column(col, justify="right", no_wrap=True)
        for slot, items in sorted(slots.items()):
            first = items[0]
            t.add_row(
                slot.strftime("%a %H:%M"),
                ", ".join(
                    f"{labels.get(a.batch_id, a.batch_id)} ({a.requests}) on {a.model}"
                    for a in items
                ),
                si(sum(a.energy_kwh for a in items), "kWh"),
                si(sum(a.co2_g for a in items), "g"),
                "-" if first.carbon_g_per_kwh is None else f"{first.carbon_g_per_kwh:.0f}",
                money(first.price_per_kwh),
                si(first.renewable_kw, "kW", digits=2),
            )
        tables.append(t)
    return tables


def register(app: typer.Typer) -> None:
    """Mount ``schedule`` and ``report`` on ``app``."""

    @app.command()
    def schedule(
        tenant: TenantOption = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    ) -> None:
        """Print the current plan per pool and slot, with carbon, price and renewables beside it.

        Reads the store named by GRIDSHIFT_DATABASE_URL directly: no server needed.
        """
        with exit_on_error(), store_session() as session:
            plan = current_plan(session, tenant_id=tenant_id_of(session, tenant))
            labels = batch_labels(session, (a.batch_id for a in plan.assignments))
        if as_json:
            print_json(plan.model_dump(mode="json"))
            return
        console = Console()  # the terminal's width; piped: COLUMNS, else 80
        if plan.plan is None:
            console.print("no current plan (submit a batch, or run the dispatcher to plan)")
            return
        p = plan.plan
        console.print(
            f"plan #{p.id} ({p.status}, {p.trigger}) made {p.created_at:%Y-%m-%d %H:%M} UTC, "
            f"objectives {' > '.join(map(str, p.objectives))}, "
            f"{plural(len(plan.assignments), 'assignment')}; figures ESTIMATED from the profiles"
        )
        for table in schedule_tables(plan, labels):
            console.print(table)

    @app.command()
    def report(
        start: Annotated[
            str | None, typer.Option("--from", help="Start (ISO-8601, UTC); default 7 days ago.")
        ] = None,
        end: Annotated[
            str | None, typer.Option("--to", help="End (exclusive); default now.")
        ] = None,
        fmt: Annotated[
            ReportFormat, typer.Option("--format", help="csv (CodeCarbon), json or esrs.")
        ] = ReportFormat.CSV,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
        ] = None,
        tenant: TenantOption = None,
    ) -> None:
        """Write an emissions report from the ledger (CodeCarbon CSV, JSON with GHG scope 2, ESRS E1).

        Reads the store named by GRIDSHIFT_DATABASE_URL directly: no server needed.
        """
        with exit_on_error():
            hi = parse_time(end, "--to") or now_utc()
            lo = parse_time(start, "--from") or hi - timedelta(days=7)
            if hi <= lo:
                raise InvalidInput(
                    f"--to ({hi.isoformat()}) must be after --from ({lo.isoformat()})"
                )
            from scheduler.api.deps import load_configured_fleet

            fleet = load_configured_fleet(get_settings())
            with store_session() as session:
                rows = ledger_entries(session, lo, hi, tenant_id=tenant_id_of(session, tenant))
                text, _media = render_report(rows, fmt, lo, hi, fleet=fleet, session=session)
        if output is None:
            typer.echo(text, nl=not text.endswith("\n"))
        else:
            output.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {len(rows)} ledger rows as {fmt.value} to {output}", err=True)
