"""Draft-note provenance (DWB-82/83): prompt version, source resource ids, and the EHR Provenance once created.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("prompt_version", sa.String(100)))
        batch.add_column(sa.Column("source_resources", sa.JSON()))
        batch.add_column(sa.Column("provenance_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("provenance_id")
        batch.drop_column("source_resources")
        batch.drop_column("prompt_version")
