"""Tenants and their bearer API keys (only a key's SHA-256 and prefix are stored)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

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


def create_api_key(session: Session, tenant_name: str, *, admin: bool = False) -> str:
    """Create a key for ``tenant_name`` (the tenant is created if new); the caller commits.

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
    api_key, tenant = row
    return tenant, api_key.is_admin


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
