"""Vendor call budgets shared by every process (``store.rate_windows``; vendors.md §4, eCW's per-practice limit).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_slots",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "slot"),
    )


def downgrade() -> None:
    op.drop_table("rate_slots")
