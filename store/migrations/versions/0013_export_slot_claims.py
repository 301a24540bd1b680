"""Export slot claims (``engine.export_slots``): a kick-off under way on a vendor's one-export-per-client slot.

Before, two processes could both find the slot free and both kick off (the second answered 429). A claim row, keyed
on the slot, is inserted before the ``$export`` request and deleted once its job is saved or the kick-off failed;
its taker sets when it may be taken over (``expires_at``), from its own settings.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_slot_claims",
        sa.Column("slot", sa.String(80), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("connection_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("owner_pid", sa.Integer(), nullable=False),
        sa.Column("owner_host", sa.String(255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
    )


def downgrade() -> None:
    op.drop_table("export_slot_claims")
