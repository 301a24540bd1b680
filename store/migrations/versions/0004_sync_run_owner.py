"""Sync runs: the owning process of a running row, and an index for the scheduler's per-status reads.

``owner_pid``/``owner_host`` name the process that last marked a run running, so that a later run of the
connection closes it as ``abandoned`` only once that process is gone. ``(connection_id, status, created_at)``
serves the retry streaks the scheduler reads every tick.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("owner_pid", sa.Integer()))
        batch.add_column(sa.Column("owner_host", sa.String(255)))
    op.create_index("ix_sync_runs_connection_status_created", "sync_runs", ["connection_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_connection_status_created", table_name="sync_runs")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("owner_host")
        batch.drop_column("owner_pid")
