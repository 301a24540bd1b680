"""A note whose earlier POST may have been stored (a lost answer, a 5xx, a run killed while sending): a later
refusal or spent retries must not end it ``failed`` before the identifier search has looked.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("maybe_stored", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("maybe_stored")
