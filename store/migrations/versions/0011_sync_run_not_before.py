"""Sync runs: ``not_before``, when the EHR said to come back (a throttle's Retry-After, a spent quota's reset).

A batch member stopped by a source-wide throttle, and the members of its source deferred after it, are not asked
for again before then (``engine.batch_defer``, ``engine.planning``).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("not_before")
