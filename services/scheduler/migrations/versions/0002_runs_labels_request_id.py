"""runs: the caller's labels, the CreateRun request id (idempotent creates), the creating token.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

All three are nullable: runs made before have no labels, no request id and no known creator.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(128), nullable=True))
        batch.create_unique_constraint("uq_runs_request_id", ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_request_id", type_="unique")
        batch.drop_column("created_by")
        batch.drop_column("request_id")
        batch.drop_column("labels")
