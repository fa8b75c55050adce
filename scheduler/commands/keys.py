"""``gridshift keys create|list|revoke``: API keys, written to the configured database directly."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from scheduler.cli import EXIT_UNREACHABLE, EXIT_USAGE
from scheduler.commands.common import exit_on_error, fail, print_json
from scheduler.config import get_settings
from scheduler.store.tables import now_utc

_SPAN = re.compile(r"^\s*(\d{1,5})\s*([hd])\s*$")


def parse_expiry(text: str | None, now: datetime) -> datetime | None:
    """``90d`` or ``12h`` from ``now``; None for no expiry.

    Raises:
        typer.Exit: anything else (usage error).
    """
    if text is None:
        return None
    m = _SPAN.match(text)
    if not m or int(m.group(1)) == 0:
        raise fail(f"--expires-in must be like 90d or 12h, got {text!r}", EXIT_USAGE)
    n = int(m.group(1))
    return now + (timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n))


@contextmanager
def key_store() -> Iterator[Session]:
    """A transaction on the configured database, with the errors a user can act on."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError

    from scheduler.store.db import existing_store_engine, session_factory, transaction

    settings = get_settings()
    with exit_on_error():
        engine = existing_store_engine(settings)  # never leaves an empty database behind
    where = engine.url.render_as_string(hide_password=True)
    try:
        if not inspect(engine).has_table("api_keys"):
            raise fail(
                f"the database at {where} has no gridshift schema; run `gridshift db "
                "upgrade` first (same GRIDSHIFT_DATABASE_URL / GRIDSHIFT_DATA_DIR)",
                EXIT_USAGE,
            )
        with exit_on_error(), transaction(session_factory(engine)) as session:
            yield session
    except OperationalError as e:
        raise fail(
            f"cannot reach the database at {where} ({e.orig}); check GRIDSHIFT_DATABASE_URL",
            EXIT_UNREACHABLE,
        ) from None
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    """Mount ``keys`` on ``app``."""
    keys = typer.Typer(help="API keys (writes the database directly).", no_args_is_help=True)

    @keys.command("create")
    def keys_create(
        tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
        admin: Annotated[
            bool, typer.Option("--admin", help="Key may use admin endpoints.")
        ] = False,
        expires_in: Annotated[
            str | None, typer.Option(help="Lifetime, e.g. 90d or 12h (default: no expiry).")
        ] = None,
    ) -> None:
        """Create an API key for a tenant and print it (shown once; only its hash is kept).

        Needs the schema: run ``gridshift db upgrade`` first (``serve`` does it on start).
        """
        from scheduler.store.tenants import create_api_key

        expires_at = parse_expiry(expires_in, now_utc())
        with key_store() as session:
            key = create_api_key(session, tenant, admin=admin, expires_at=expires_at)
        typer.echo(key)
        kind = "admin key" if admin else "key"
        until = f", valid until {expires_at.isoformat()}" if expires_at else ""
        typer.echo(f"created {kind} for tenant {tenant!r}{until}; it is shown only once", err=True)

    @keys.command("list")
    def keys_list(
        tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    ) -> None:
        """List keys: id, prefix, tenant, admin, state, created, expires (never the key)."""
        from scheduler.store.tenants import list_keys

        with key_store() as session:
            infos = list_keys(session, tenant_name=tenant)
        if as_json:
            print_json([k.as_json() for k in infos])
            return
        for k in infos:
            typer.echo(
                f"{k.id}  {k.prefix}...  {k.tenant:20s}  {'admin' if k.is_admin else '-':5s}  "
                f"{k.state:7s}  created {k.created_at:%Y-%m-%d %H:%M}  "
                f"expires {k.expires_at.isoformat() if k.expires_at else 'never'}"
            )

    @keys.command("revoke")
    def keys_revoke(
        key: Annotated[str, typer.Argument(help="Key id (key_...) or the key's 10-char prefix.")],
    ) -> None:
        """Revoke a key at once (by id from `keys list`, or by its prefix gs-XXXXXXX)."""
        from scheduler.store.tenants import revoke_key, revoke_key_by_id

        with key_store() as session:
            if key.startswith("key_"):
                revoke_key_by_id(session, key)
                count = 1
            else:
                count = revoke_key(session, key)
        typer.echo(f"revoked {count} key(s)", err=True)

    app.add_typer(keys, name="keys")
