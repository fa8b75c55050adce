"""Provenance on assignments and ledger rows; the lifecycle figure apart (issue 19)

assignments.signal_provider / signal_synthetic / signal_fallback_reason and the same on
ledger_entries, plus ledger_entries.co2_lifecycle_g and price_fallback.

Revision ID: 0011_ledger_provenance
Revises: 0010_part_request_tokens
Create Date: 2026-12-08 01:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_ledger_provenance"
down_revision: str | None = "0010_part_request_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _provenance() -> list[sa.Column[object]]:
    return [
        sa.Column("signal_provider", sa.String(length=64), nullable=True),
        sa.Column("signal_synthetic", sa.Boolean(), nullable=True),
        sa.Column("signal_fallback_reason", sa.String(length=500), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch_op:
        for column in _provenance():
            batch_op.add_column(column)
    with op.batch_alter_table("ledger_entries") as batch_op:
        for column in _provenance():
            batch_op.add_column(column)
        batch_op.add_column(sa.Column("co2_lifecycle_g", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("price_fallback", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.drop_column("price_fallback")
        batch_op.drop_column("co2_lifecycle_g")
        for name in ("signal_fallback_reason", "signal_synthetic", "signal_provider"):
            batch_op.drop_column(name)
    with op.batch_alter_table("assignments") as batch_op:
        for name in ("signal_fallback_reason", "signal_synthetic", "signal_provider"):
            batch_op.drop_column(name)
