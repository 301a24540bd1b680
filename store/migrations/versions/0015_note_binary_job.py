"""A note's Binary accepted for later (202, DWB-18): its status URL is kept with the note, so a later try asks that
job again instead of creating another Binary (each holding the note's text, left unreferenced in the EHR), and the
Binary POSTs of the note are counted, so no more than a few are ever sent.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("binary_status_url", sa.Text()))
        batch.add_column(sa.Column("binary_posts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("binary_posts")
        batch.drop_column("binary_status_url")
