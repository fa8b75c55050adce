"""ledger_entries.model_load_kwh / model_load_method (issue 9: model-load energy, labelled)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.add_column(sa.Column("model_load_kwh", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("model_load_method", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.drop_column("model_load_method")
        batch_op.drop_column("model_load_kwh")
