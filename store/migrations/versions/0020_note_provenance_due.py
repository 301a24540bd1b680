"""A Provenance owed (DWB-82): ``provenance_due_at`` is set in the commit that makes a note ``written`` when the
tenant's switches and the EHR's CapabilityStatement allow Provenance create, and cleared once it is created (or
refused for good, or no longer allowed). A run killed between the two leaves it set, so a later write-back run sends
it (``engine.writeback.provenance_due``); ``provenance_tries`` counts those later runs' tries (bounded).

Notes written before this revision read none owed: each had its one chance under the old code.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("provenance_due_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("provenance_tries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("provenance_tries")
        batch.drop_column("provenance_due_at")
