"""``gridshift keys create`` writes a key to the configured database, or says to migrate first."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli import EXIT_OK, EXIT_USAGE, build_app
from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tenants import resolve_key


def _env(tmp_path: Path) -> dict[str, str]:
    return {"GRIDSHIFT_DATA_DIR": str(tmp_path / "data"), "GRIDSHIFT_DATABASE_URL": ""}


def test_keys_create_on_an_unmigrated_database_asks_for_db_upgrade(tmp_path: Path) -> None:
    # Given an empty data directory (no schema)
    runner = CliRunner()

    # When a key is asked for
    result = runner.invoke(build_app(), ["keys", "create", "--tenant", "acme"], env=_env(tmp_path))

    # Then it refuses with exit 2 and names the command that fixes it; no key is printed
    assert result.exit_code == EXIT_USAGE
    assert "gridshift db upgrade" in result.stderr
    assert result.stdout == ""


def test_keys_create_prints_a_key_that_resolves_to_its_tenant(tmp_path: Path) -> None:
    # Given a migrated embedded database
    runner = CliRunner()
    env = _env(tmp_path)
    assert runner.invoke(build_app(), ["db", "upgrade"], env=env).exit_code == EXIT_OK

    # When an admin key and a plain key are created for a new tenant
    admin = runner.invoke(build_app(), ["keys", "create", "--tenant", "acme", "--admin"], env=env)
    plain = runner.invoke(build_app(), ["keys", "create", "--tenant", "acme"], env=env)

    # Then stdout is only the key, and each resolves to the tenant with its admin flag
    assert admin.exit_code == plain.exit_code == EXIT_OK
    settings = Settings(data_dir=tmp_path / "data")
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_factory(engine)() as session:
            for result, is_admin in ((admin, True), (plain, False)):
                tenant, admin_flag = resolve_key(session, result.stdout.strip())
                assert tenant.name == "acme"
                assert admin_flag is is_admin
    finally:
        engine.dispose()
    assert admin.stdout.strip() != plain.stdout.strip()


def test_keys_list_shows_no_secret_and_revoke_and_expiry_lock_keys_out(tmp_path: Path) -> None:
    import json
    from datetime import timedelta

    import pytest
    from sqlalchemy import update

    from scheduler.errors import Unauthenticated
    from scheduler.store.tables import ApiKey, now_utc

    runner = CliRunner()
    env = _env(tmp_path)
    assert runner.invoke(build_app(), ["db", "upgrade"], env=env).exit_code == EXIT_OK
    # Given two keys of acme, one with a 12-hour lifetime, and one of globex
    keep = runner.invoke(build_app(), ["keys", "create", "--tenant", "acme"], env=env).stdout
    short = runner.invoke(
        build_app(), ["keys", "create", "--tenant", "acme", "--expires-in", "12h"], env=env
    ).stdout.strip()
    runner.invoke(build_app(), ["keys", "create", "--tenant", "globex"], env=env)
    bad = runner.invoke(
        build_app(), ["keys", "create", "--tenant", "x", "--expires-in", "soon"], env=env
    )
    assert bad.exit_code == EXIT_USAGE and "90d" in bad.stderr
    # When acme's keys are listed
    listed = runner.invoke(build_app(), ["keys", "list", "--tenant", "acme", "--json"], env=env)
    rows = json.loads(listed.stdout)
    # Then both show, active, with prefixes but never the key
    assert [r["state"] for r in rows] == ["active", "active"]
    assert rows[1]["expires_at"] is not None and rows[0]["expires_at"] is None
    assert keep.strip() not in listed.stdout and short not in listed.stdout
    assert {r["prefix"] for r in rows} == {keep[:10], short[:10]}
    settings = Settings(data_dir=tmp_path / "data")
    engine = make_engine(settings.resolved_database_url)
    try:
        # When the long-lived key is revoked by id
        revoked = runner.invoke(build_app(), ["keys", "revoke", rows[0]["id"]], env=env)
        assert revoked.exit_code == EXIT_OK
        # and the short one's lifetime has passed
        with session_factory(engine)() as s, s.begin():
            s.execute(
                update(ApiKey)
                .where(ApiKey.id == rows[1]["id"])
                .values(expires_at=now_utc() - timedelta(seconds=1))
            )
        # Then neither key works, each saying why
        with session_factory(engine)() as s:
            with pytest.raises(Unauthenticated, match="revoked"):
                resolve_key(s, keep.strip())
            with pytest.raises(Unauthenticated, match="expired"):
                resolve_key(s, short)
    finally:
        engine.dispose()
    states = json.loads(runner.invoke(build_app(), ["keys", "list", "--json"], env=env).stdout)
    assert sorted(r["state"] for r in states) == ["active", "expired", "revoked"]
