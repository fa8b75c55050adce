"""forecast_issues (every forecast issue kept) and assignments.signal_issued_at (issue 12)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import scheduler.store.tables

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forecast_issues",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("signal", sa.String(length=32), nullable=False),
        sa.Column("time", scheduler.store.tables.UTCDateTime(), nullable=False),
        sa.Column("issued_at", scheduler.store.tables.UTCDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_issues")),
        sa.UniqueConstraint(
            "provider",
            "key",
            "signal",
            "time",
            "issued_at",
            name=op.f("uq_forecast_issues_provider_key_signal_time_issued_at"),
        ),
    )
    with op.batch_alter_table("forecast_issues") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_forecast_issues_issued_at"), ["issued_at"], unique=False
        )
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.add_column(
            sa.Column("signal_issued_at", scheduler.store.tables.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.drop_column("signal_issued_at")
    with op.batch_alter_table("forecast_issues") as batch_op:
        batch_op.drop_index(batch_op.f("ix_forecast_issues_issued_at"))
    op.drop_table("forecast_issues")
