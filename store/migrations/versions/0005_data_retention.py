"""Data retention: when a connection was disconnected and purged, and a tenant's retention period.

``connections.disconnected_at`` starts a disconnected connection's retention clock (rows disconnected before
this revision take their ``updated_at``, the time of their last change); ``connections.data_purged_at`` says
its data is gone (a purge sets it last, so a purge that crashed midway is found and finished by the next one);
``tenants.data_retention_days`` is how long a tenant keeps a disconnected connection's data (NULL: forever).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("disconnected_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("data_purged_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("data_retention_days", sa.Integer()))
    op.execute("UPDATE connections SET disconnected_at = updated_at WHERE status = 'disconnected'")


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("data_retention_days")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("data_purged_at")
        batch.drop_column("disconnected_at")
