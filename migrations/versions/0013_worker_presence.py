"""worker_presence: every worker process's heartbeat, state and shard (issue 21)

Revision ID: 0013_worker_presence
Revises: 0012_webhooks
Create Date: 2026-12-08 02:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_worker_presence"
down_revision: str | None = "0012_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_presence",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("pool", sa.String(100), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("shard_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
    )
    op.create_index("ix_worker_presence_site", "worker_presence", ["site"])
    op.create_index("ix_worker_presence_last_seen_at", "worker_presence", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_presence_last_seen_at", table_name="worker_presence")
    op.drop_index("ix_worker_presence_site", table_name="worker_presence")
    op.drop_table("worker_presence")
