"""ledger_entries.energy_method holds 64 characters (issue 19: measured-rapl-shared+estimated-load)

Revision ID: 0014_energy_method_width
Revises: 0013_worker_presence
Create Date: 2026-12-08 02:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_energy_method_width"
down_revision: str | None = "0013_worker_presence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.alter_column(
            "energy_method",
            existing_type=sa.String(length=32),
            type_=sa.String(length=64),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.alter_column(
            "energy_method",
            existing_type=sa.String(length=64),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
