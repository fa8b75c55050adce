"""batch_parts.max_request_tokens: the context a part's largest request needs (issue 20)

Revision ID: 0010_part_request_tokens
Revises: 0009_uploads
Create Date: 2026-12-08 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_part_request_tokens"
down_revision: str | None = "0009_uploads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_parts") as batch:
        batch.add_column(sa.Column("max_request_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_parts") as batch:
        batch.drop_column("max_request_tokens")
