"""api_rate_buckets and api_turns: tenant rate limits and in-flight caps shared by API replicas
(issue 21)

Revision ID: 0015_api_limits
Revises: 0014_energy_method_width
Create Date: 2026-12-08 01:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_api_limits"
down_revision: str | None = "0014_energy_method_width"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_rate_buckets",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("filled_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_api_rate_buckets")),
    )
    op.create_table(
        "api_turns",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_api_turns")),
    )
    op.create_index(op.f("ix_api_turns_tenant_id"), "api_turns", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_turns_tenant_id"), table_name="api_turns")
    op.drop_table("api_turns")
    op.drop_table("api_rate_buckets")
