"""one pricing: planned signal and pieces on assignments; factor type, fallbacks and deviations on the ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ASSIGNMENT_FLOATS = (
    "renewable_kwh",
    "grid_kwh",
    "price_per_kwh",
    "renewable_kw",
    "wue_l_per_kwh",
)
_LEDGER_FLOATS = ("planned_grid_kwh", "co2_marginal_g", "busy_estimate_kwh")


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        for name in _ASSIGNMENT_FLOATS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("carbon_factor", sa.String(length=32), nullable=True))
    with op.batch_alter_table("ledger_entries") as batch:
        for name in _LEDGER_FLOATS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("carbon_factor", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("signal_fallback", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("deviations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        for name in ("deviations", "signal_fallback", "carbon_factor", *_LEDGER_FLOATS):
            batch.drop_column(name)
    with op.batch_alter_table("assignments") as batch:
        for name in ("carbon_factor", *_ASSIGNMENT_FLOATS):
            batch.drop_column(name)
