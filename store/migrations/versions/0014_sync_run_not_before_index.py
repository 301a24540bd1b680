"""Sync runs: an index on ``not_before``, so the hourly read of the source holds that ended
(``engine.retries.holds_ended``, for the weekly reconcile's slots) seeks it instead of scanning every run ever made.

Partial (rows with a ``not_before`` only: most runs note none) and covering (``connection_id`` too: the read needs
nothing else), on SQLite and PostgreSQL alike.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_NOTED = sa.text("not_before IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_sync_runs_not_before",
        "sync_runs",
        ["not_before", "connection_id"],
        sqlite_where=_NOTED,
        postgresql_where=_NOTED,
    )


def downgrade() -> None:
    op.drop_index("ix_sync_runs_not_before", table_name="sync_runs")
