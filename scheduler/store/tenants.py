"""Tenants and their bearer API keys (only a key's SHA-256 and prefix are stored)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.errors import InvalidInput, NotFound, Unauthenticated
from scheduler.store.tables import ApiKey, Tenant, now_utc

KEY_PREFIX = "gs-"
_PREFIX_CHARS = 10  # stored prefix, e.g. "gs-AbCdEfG", to recognise a key in listings


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the tenant a key belongs to and whether it is an admin key."""

    tenant_id: str
    tenant_name: str
    is_admin: bool


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of a plaintext key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_tenant(session: Session, name: str) -> Tenant | None:
    """Return the tenant called ``name``, or None."""
    return session.scalars(select(Tenant).where(Tenant.name == name)).first()


def tenant_names(session: Session, ids: set[str]) -> dict[str, str]:
    """Tenant id -> name for ``ids`` (one query)."""
    if not ids:
        return {}
    return dict(session.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(ids))).all())


def create_tenant(session: Session, name: str) -> Tenant:
    """Create the tenant ``name`` (or return it if it exists); the caller commits.

    Raises:
        InvalidInput: the name is empty or longer than 200 characters.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput(f"tenant name must be 1-200 characters, got {name!r}")
    existing = get_tenant(session, name)
    if existing is not None:
        return existing
    tenant = Tenant(id=f"tenant_{uuid.uuid4().hex[:20]}", name=name, created_at=now_utc())
    session.add(tenant)
    session.flush()
    return tenant


def create_api_key(
    session: Session, tenant_name: str, *, admin: bool = False, expires_at: datetime | None = None
) -> str:
    """Create a key for ``tenant_name`` (the tenant is created if new); the caller commits.

    ``expires_at`` (aware UTC), if given, is when the key stops working.

    Returns:
        The plaintext key (``gs-...``). It is shown once: only its SHA-256 is stored.

    Raises:
        InvalidInput: the tenant name is invalid.
    """
    tenant = create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            id=f"key_{uuid.uuid4().hex[:20]}",
            tenant_id=tenant.id,
            key_sha256=hash_key(key),
            prefix=key[:_PREFIX_CHARS],
            is_admin=admin,
            created_at=now_utc(),
            revoked_at=None,
            expires_at=expires_at,
        )
    )
    session.flush()
    return key


def resolve_key(session: Session, key: str) -> tuple[Tenant, bool]:
    """Return ``(tenant, is_admin)`` for a plaintext key.

    Raises:
        Unauthenticated: the key is empty, unknown or revoked.
    """
    if not key:
        raise Unauthenticated(
            "no API key: send 'Authorization: Bearer <key>' (create one with "
            "`gridshift keys create --tenant NAME`)"
        )
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_sha256 == hash_key(key))
    ).first()
    if row is None or row[0].revoked_at is not None:
        raise Unauthenticated(
            f"unknown or revoked API key {key[:_PREFIX_CHARS]}...: create one with "
            "`gridshift keys create --tenant NAME`"
        )
    if row[0].expires_at is not None and row[0].expires_at <= now_utc():
        raise Unauthenticated(
            f"API key {key[:_PREFIX_CHARS]}... expired at {row[0].expires_at.isoformat()}: "
            "ask an admin for a new one (`gridshift keys create --tenant NAME`)"
        )
    api_key, tenant = row
    return tenant, api_key.is_admin


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never the key itself, only its id and prefix."""

    id: str
    prefix: str
    tenant: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def state(self) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now_utc():
            return "expired"
        return "active"

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (Unix seconds), the shape of ``gridshift keys list --json`` and the API."""

        def unix(t: datetime | None) -> int | None:
            return int(t.timestamp()) if t is not None else None

        return {
            "object": "api_key",
            "id": self.id,
            "prefix": self.prefix,
            "tenant": self.tenant,
            "admin": self.is_admin,
            "state": self.state,
            "created_at": unix(self.created_at),
            "expires_at": unix(self.expires_at),
            "revoked_at": unix(self.revoked_at),
        }


def _key_infos(session: Session, *conditions: Any) -> list[KeyInfo]:
    q = (
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(*conditions)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [
        KeyInfo(k.id, k.prefix, name, k.is_admin, k.created_at, k.expires_at, k.revoked_at)
        for k, name in session.execute(q).all()
    ]


def list_keys(session: Session, *, tenant_name: str | None = None) -> list[KeyInfo]:
    """Every key (or one tenant's), oldest first."""
    return _key_infos(session, *([Tenant.name == tenant_name] if tenant_name is not None else []))


def key_info(session: Session, key: str) -> KeyInfo:
    """The record of a plaintext key (found by its hash).

    Raises:
        NotFound: no such key.
    """
    infos = _key_infos(session, ApiKey.key_sha256 == hash_key(key))
    if not infos:
        raise NotFound(f"no API key {key[:_PREFIX_CHARS]}...")
    return infos[0]


def revoke_key_by_id(session: Session, key_id: str) -> KeyInfo:
    """Revoke the key with id ``key_id`` (idempotent); the caller commits.

    Raises:
        NotFound: no key has that id.
    """
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key has the id {key_id[:80]!r}: see `gridshift keys list`")
    if key.revoked_at is None:
        key.revoked_at = now_utc()
        session.flush()
    return _key_infos(session, ApiKey.id == key_id)[0]


def revoke_key(session: Session, key_prefix: str) -> int:
    """Revoke every active key whose stored prefix (first 10 characters) is ``key_prefix``.

    The caller commits.

    Returns:
        The number of keys revoked.

    Raises:
        NotFound: no active key matches.
    """
    keys = session.scalars(
        select(ApiKey).where(
            ApiKey.prefix == key_prefix[:_PREFIX_CHARS], ApiKey.revoked_at.is_(None)
        )
    ).all()
    if not keys:
        raise NotFound(f"no active API key has the prefix {key_prefix[:_PREFIX_CHARS]!r}")
    for k in keys:
        k.revoked_at = now_utc()
    return len(keys)
