"""An upload not completed within its hour reads ``expired``; the sweep removes its parts."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.clock import frozen, use_clock
from scheduler.errors import InvalidTransition
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_tenant
from scheduler.store.uploads import (
    UploadLimits,
    add_part,
    create_upload,
    get_upload,
    parts_dir,
    sweep_uploads,
)

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
LIMITS = UploadLimits(max_upload_bytes=1_000, max_part_bytes=100, expires_s=3_600)


def test_a_pending_upload_expires_after_its_hour_and_its_parts_are_swept(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'u.db'}")
    upgrade(engine)
    files_dir = tmp_path / "files"
    with session_factory(engine)() as s:
        # Given an upload created at T0 with one part
        with use_clock(frozen(T0)):
            tenant = create_tenant(s, "acme").id
            row = create_upload(
                s,
                LIMITS,
                tenant_id=tenant,
                filename="a.jsonl",
                purpose="batch",
                bytes_=20,
                mime_type="application/jsonl",
                file_expires_after_s=None,
            )
            s.commit()
            add_part(
                s,
                files_dir,
                LIMITS,
                tenant_id=tenant,
                upload_id=row.id,
                source=io.BytesIO(b"a" * 10),
            )
        assert row.expires_at == int(T0.timestamp()) + 3_600

        # When the clock reads one second before the hour, Then it still takes parts
        with use_clock(frozen(T0 + timedelta(seconds=3_599))):
            assert get_upload(s, tenant, row.id).status == "pending"
            assert sweep_uploads(s, files_dir) == 0
            s.rollback()

        # When the hour has passed, Then it reads expired, takes no part, and the sweep
        # records it and removes its parts
        with use_clock(frozen(T0 + timedelta(seconds=3_600))):
            with pytest.raises(InvalidTransition, match="expired"):
                add_part(
                    s, files_dir, LIMITS, tenant_id=tenant, upload_id=row.id, source=[b"b" * 10]
                )
            assert parts_dir(files_dir, row.id).is_dir()
            assert sweep_uploads(s, files_dir) == 1
        s.expire_all()
        assert get_upload(s, tenant, row.id).status == "expired"
        assert not parts_dir(files_dir, row.id).exists()
    engine.dispose()
