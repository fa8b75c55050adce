"""FastAPI dependencies as ``Annotated`` aliases: session, settings, caller, admin, fleet."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.api.guard import CALLER_STATE
from scheduler.config import Settings
from scheduler.domain import Fleet
from scheduler.errors import PermissionDenied, Unauthenticated
from scheduler.fleet import load_fleet
from scheduler.store.tenants import Caller, create_tenant, get_tenant, resolve_key

SAMPLE_FLEET = Path(__file__).resolve().parents[1] / "samples" / "fleet.yaml"
BOOTSTRAP_ADMIN_TENANT = "admin"


def load_configured_fleet(settings: Settings) -> Fleet | None:
    """The fleet of ``settings.fleet``, else the bundled sample, else None if that is absent.

    Raises:
        ConfigError: the configured fleet file is missing or invalid (fail fast).
    """
    if settings.fleet is not None:
        return load_fleet(settings.fleet)
    return load_fleet(SAMPLE_FLEET) if SAMPLE_FLEET.is_file() else None


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request; routes commit what they change, the rest is rolled back."""
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_fleet(request: Request) -> Fleet | None:
    """The fleet (loaded once; the bundled sample is looked for again while it is absent)."""
    fleet: Fleet | None = request.app.state.fleet
    if fleet is None:
        fleet = request.app.state.fleet = load_configured_fleet(request.app.state.settings)
    return fleet


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
FleetDep = Annotated[Fleet | None, Depends(get_fleet)]


def _bearer(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated(
            "missing API key: send 'Authorization: Bearer <key>' "
            "(OpenAI(api_key=...) does this; create a key with `gridshift keys create`)"
        )
    return key.strip()


def _bootstrap_admin(session: Session) -> Caller:
    tenant = get_tenant(session, BOOTSTRAP_ADMIN_TENANT)
    if tenant is None:
        try:
            tenant = create_tenant(session, BOOTSTRAP_ADMIN_TENANT)
            session.commit()
        except IntegrityError:  # a concurrent request created it first
            session.rollback()
            tenant = get_tenant(session, BOOTSTRAP_ADMIN_TENANT)
            assert tenant is not None
    return Caller(tenant_id=tenant.id, tenant_name=tenant.name, is_admin=True)


def authenticate(session: Session, settings: Settings, key: str) -> Caller:
    """The caller a plaintext bearer key stands for.

    ``settings.admin_key`` (if set) is accepted as an admin key of tenant ``admin``.

    Raises:
        Unauthenticated: an unknown, revoked or expired key.
    """
    if settings.admin_key and secrets.compare_digest(key.encode(), settings.admin_key.encode()):
        return _bootstrap_admin(session)
    tenant, is_admin = resolve_key(session, key)
    return Caller(tenant_id=tenant.id, tenant_name=tenant.name, is_admin=is_admin)


def get_caller(request: Request, session: SessionDep, settings: SettingsDep) -> Caller:
    """The caller of this request: resolved by the request guard before the body was read,
    else (routes outside ``/v1``) from its bearer key here.

    Raises:
        Unauthenticated: no key, or an unknown or revoked one.
    """
    caller: Caller | None = request.scope.get("state", {}).get(CALLER_STATE)
    if caller is not None:
        return caller
    return authenticate(session, settings, _bearer(request))


TenantDep = Annotated[Caller, Depends(get_caller)]


def get_admin(caller: TenantDep) -> Caller:
    """The caller, who must hold an admin key.

    Raises:
        PermissionDenied: the key is not an admin key.
    """
    if not caller.is_admin:
        raise PermissionDenied(
            "this endpoint needs an admin key (`gridshift keys create --tenant NAME --admin`)"
        )
    return caller


AdminDep = Annotated[Caller, Depends(get_admin)]
